"""Helpers shared by the CPU kernel tests: the shapes and variants they run, and (over tests/kernels/
kernel_testutil.py, the one helper set) poisoned slot buffers and assertions that explain a failure."""

from __future__ import annotations

import kernel_testutil as ku
import torch
from torch import Tensor

from unet_fast.kernels import cpu_isa

NAN = ku.NAN
BATCHES = (1, 3)
SIZES = ((17, 23), (33, 47))  # odd, not a multiple of any block
# The builds of the C++ kernel bodies this CPU runs ("portable", and "avx2" where it can): tests run each.
ISAS = cpu_isa.available_isas()
CHANNELS = (3, 5, 37)


def nhwc_randn(n: int, h: int, w: int, c: int, scale: float = 1.0) -> Tensor:
    return torch.randn(n, h, w, c) * scale


def conv_weight(cout: int, cin: int, kh: int, kw: int) -> Tensor:
    """Random OIHW weight scaled like a trained layer, so outputs stay O(1) and tolerances mean something."""
    return torch.randn(cout, cin, kh, kw) / (cin * kh * kw) ** 0.5


def poisoned_slot(shape: tuple[int, ...], before: int = 2, after: int = 3,
                  dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:  # fmt: skip
    """A NaN-filled NHWC buffer with `before` + C + `after` channels and its channel slot [before, before + C)."""
    return ku.poisoned_slot(shape, dtype, before=before, after=after)  # type: ignore[arg-type]


def assert_close(got: Tensor, ref: Tensor, what: str = "") -> None:
    """spec.TOLERANCES[got.dtype] (exact for other dtypes); NaN (unwritten) fails: kernel_testutil.assert_close."""
    ku.assert_close(got, ref, what)


def assert_outside_slot_untouched(buf: Tensor, before: int, after: int) -> None:
    ku.assert_outside_untouched(buf, before, buf.shape[-1] - after)
