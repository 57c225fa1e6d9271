"""Typed launchers over unet_fast._C (the C++ CPU ops). All argument checking happens here; the C++
side re-checks only what could write out of bounds. Threads follow torch.get_num_threads()."""

from __future__ import annotations

import torch
from torch import Tensor

from unet_fast._ext import require_cpu
from unet_fast.kernels.spec import ACTIVATIONS


def num_threads() -> int:
    """The thread count every CPU op uses: torch's, so the two never oversubscribe the cores."""
    return max(1, torch.get_num_threads())


def activation(
    x: Tensor, act: str = "relu", negative_slope: float = 0.01, out: Tensor | None = None
) -> Tensor:
    """Elementwise activation of a contiguous fp32 CPU tensor (the extension's smoke-test op)."""
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; expected one of {ACTIVATIONS}")
    if x.device.type != "cpu" or x.dtype != torch.float32 or not x.is_contiguous():
        raise ValueError(f"expected a contiguous float32 CPU tensor, got {x.dtype} on {x.device}"
                         f"{'' if x.is_contiguous() else ', non-contiguous'}")  # fmt: skip
    out = torch.empty_like(x) if out is None else out
    if out.shape != x.shape or out.dtype != x.dtype or not out.is_contiguous() or out.device != x.device:
        raise ValueError(f"out must be a contiguous float32 CPU tensor of shape {tuple(x.shape)}")
    require_cpu().activation_f32(x.data_ptr(), out.data_ptr(), x.numel(), ACTIVATIONS.index(act),
                                 float(negative_slope), num_threads())  # fmt: skip
    return out
