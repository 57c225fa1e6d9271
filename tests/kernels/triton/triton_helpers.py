"""Shared helpers of the Triton kernel tests: poisoned slot buffers and parity asserts that explain a
failure (where, how many, NaN counts), with tolerances from spec.TOLERANCES."""

from __future__ import annotations

import torch
from torch import Tensor

from unet_fast.kernels import spec

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
DTYPE_IDS = ("fp32", "fp16", "bf16")


def rand(*shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.randn(*shape).to(dtype)


def conv_weight(cout: int, cin: int, kh: int, kw: int | None = None) -> Tensor:
    """fp32 OIHW, scaled by 1/sqrt(fan_in) so outputs stay O(1) whatever the reduction length."""
    kw = kh if kw is None else kw
    return torch.randn(cout, cin, kh, kw) / (cin * kh * kw) ** 0.5


def poisoned_slot(n: int, h: int, w: int, c: int, dtype: torch.dtype, *, before: int = 3, after: int = 2):
    """A NaN-filled NHWC buffer with `before` + c + `after` channels and its [before, before + c) slot."""
    buf = torch.full((n, h, w, before + c + after), float("nan"), dtype=dtype)
    return buf, buf[..., before : before + c]


def assert_outside_untouched(buf: Tensor, start: int, stop: int) -> None:
    outside = torch.cat([buf[..., :start], buf[..., stop:]], dim=-1)
    written = (~outside.isnan()).sum().item()
    assert written == 0, (
        f"{written} of {outside.numel()} elements outside slot [{start}, {stop}) were written"
    )


def assert_parity(got: Tensor, ref: Tensor, dtype: torch.dtype | None = None, what: str = "") -> None:
    """assert_close against the spec reference with spec.TOLERANCES[dtype]; NaN (unwritten) fails."""
    dtype = dtype or got.dtype
    assert got.shape == ref.shape, f"{what}: shape {tuple(got.shape)} != reference {tuple(ref.shape)}"
    g, r = got.float(), ref.float()
    nan = g.isnan().sum().item()
    assert nan == 0, f"{what}: {nan} of {g.numel()} elements are NaN (unwritten?)"
    atol, rtol = spec.TOLERANCES[dtype]
    err = (g - r).abs()
    bad = err > atol + rtol * r.abs()
    if bad.any():
        idx = tuple(int(i) for i in bad.nonzero()[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {g.numel()} elements off (dtype {dtype}, atol {atol}, rtol {rtol}); "
            f"max abs err {err.max().item():.3g}; first at {idx}: got {g[idx].item():.6g}, ref {r[idx].item():.6g}"
        )
