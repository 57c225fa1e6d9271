"""Shared helpers of the Triton kernel tests: poisoned slot buffers and parity asserts that explain a
failure (where, how many, NaN counts), with tolerances from spec.TOLERANCES."""

from __future__ import annotations

import kernel_testutil as ku
import torch
from torch import Tensor

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
    return ku.poisoned_slot((n, h, w, c), dtype, before=before, after=after)


def assert_outside_untouched(buf: Tensor, start: int, stop: int) -> None:
    ku.assert_outside_untouched(buf, start, stop)


def assert_parity(got: Tensor, ref: Tensor, dtype: torch.dtype | None = None, what: str = "") -> None:
    """Against the spec reference with spec.TOLERANCES[dtype]; NaN (unwritten) fails: kernel_testutil."""
    ku.assert_close(got.float(), ref.float(), what, dtype=dtype or got.dtype)
