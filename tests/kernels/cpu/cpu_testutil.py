"""Helpers shared by the CPU kernel tests: poisoned slot buffers and assertions that explain a failure."""

from __future__ import annotations

import torch
from torch import Tensor

from unet_fast.kernels import cpu_isa
from unet_fast.kernels.spec import TOLERANCES

NAN = float("nan")
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
    n, h, w, c = shape
    buf = torch.full((n, h, w, before + c + after), NAN, dtype=dtype)
    return buf, buf[..., before : before + c]


def assert_close(got: Tensor, ref: Tensor, what: str = "") -> None:
    atol, rtol = TOLERANCES[got.dtype] if got.dtype in TOLERANCES else (0.0, 0.0)
    nan = int(got.isnan().sum()) if got.is_floating_point() else 0
    assert nan == 0, f"{what}: {nan} of {got.numel()} elements are NaN (unwritten or poisoned)"
    torch.testing.assert_close(got, ref.to(got.dtype), atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")


def assert_outside_slot_untouched(buf: Tensor, before: int, after: int) -> None:
    outside = torch.cat([buf[..., :before], buf[..., buf.shape[-1] - after :]], dim=-1)
    written = int((~outside.isnan()).sum())
    assert written == 0, f"{written} elements outside the slot were overwritten"
