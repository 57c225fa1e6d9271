"""Typed launchers over unet_fast._cuda. All argument checking happens here; kernels run on the
current torch CUDA stream."""

from __future__ import annotations

import torch
from torch import Tensor

from unet_fast._ext import require_cuda
from unet_fast.kernels.spec import ACTIVATIONS


def current_stream() -> int:
    return torch.cuda.current_stream().cuda_stream


def activation(
    x: Tensor, act: str = "relu", negative_slope: float = 0.01, out: Tensor | None = None
) -> Tensor:
    """Elementwise activation of a contiguous fp32 CUDA tensor (the extension's smoke-test op)."""
    ext = require_cuda()
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; expected one of {ACTIVATIONS}")
    if x.device.type != "cuda" or x.dtype != torch.float32 or not x.is_contiguous():
        raise ValueError(f"expected a contiguous float32 CUDA tensor, got {x.dtype} on {x.device}")
    out = torch.empty_like(x) if out is None else out
    if out.shape != x.shape or out.dtype != x.dtype or not out.is_contiguous() or out.device != x.device:
        raise ValueError(f"out must be a contiguous float32 tensor of shape {tuple(x.shape)} on {x.device}")
    with torch.cuda.device(x.device):
        ext.activation_f32(x.data_ptr(), out.data_ptr(), x.numel(), ACTIVATIONS.index(act), float(negative_slope),
                           current_stream())  # fmt: skip
    return out
