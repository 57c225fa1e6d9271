"""The kernel tests' one set of helpers: poisoned output slots and a verbose closeness assertion (where, how
many, NaN / inf counts, the first offending element), with tolerances from spec.TOLERANCES (shared/STYLE.md
item 7). The per-backend helper modules (cpu/cpu_testutil.py, cpu_bf16/bf16_testutil.py,
triton/triton_helpers.py, cuda/cuda_testutil.py) keep their names as thin adapters over these, so every test
asserts the same things the same way. tests/kernels/conftest.py puts this directory on sys.path."""

from __future__ import annotations

import torch
from torch import Tensor

from unet_fast.kernels.spec import TOLERANCES

NAN = float("nan")


def poisoned_slot(shape: tuple[int, int, int, int], dtype: torch.dtype = torch.float32, *, before: int = 3,
                  after: int = 2, device: str | torch.device = "cpu") -> tuple[Tensor, Tensor]:  # fmt: skip
    """(buffer, slot): an NHWC buffer with `before` + C + `after` channels full of NaN (of -1 for an integer
    dtype), and its channel slot [before, before + C): a kernel that writes outside its slot, or leaves an
    element of it unwritten, shows."""
    n, h, w, c = shape
    fill = NAN if dtype.is_floating_point else -1
    buf = torch.full((n, h, w, before + c + after), fill, dtype=dtype, device=device)
    return buf, buf[..., before : before + c]


def _unwritten(t: Tensor) -> Tensor:
    return t.isnan() if t.is_floating_point() else t == -1


def assert_outside_untouched(buf: Tensor, start: int, stop: int, what: str = "") -> None:
    """Channels outside [start, stop) of a poisoned buffer still hold the poison."""
    outside = torch.cat([buf[..., :start], buf[..., stop:]], dim=-1)
    written = int((~_unwritten(outside)).sum())
    assert written == 0, (
        f"{what}: {written} of {outside.numel()} elements outside slot [{start}, {stop}) were written"
    )


def assert_slot_written(buf: Tensor, start: int, stop: int, what: str = "") -> None:
    """Every element of channels [start, stop) of a poisoned buffer was written."""
    slot = buf[..., start:stop]
    left = int(_unwritten(slot).sum())
    assert left == 0, f"{what}: {left} of {slot.numel()} elements of slot [{start}, {stop}) were never written"


def assert_slot_only(buf: Tensor, start: int, stop: int, what: str = "") -> None:
    """A poisoned buffer after the kernel: its slot [start, stop) fully written, nothing outside it."""
    assert_outside_untouched(buf, start, stop, what)
    assert_slot_written(buf, start, stop, what)


def assert_close(got: Tensor, ref: Tensor, what: str = "", *, dtype: torch.dtype | None = None,
                 atol: float | None = None, rtol: float | None = None) -> None:  # fmt: skip
    """|got - ref| <= atol + rtol |ref| elementwise, ref first rounded to got's dtype (the kernel's output
    is one rounding of its accumulation), tolerances from spec.TOLERANCES[dtype or got.dtype] unless given
    (integer outputs: exact). A failure says how many elements are NaN (unwritten) or off, the largest
    error, and the first offending element with its value and the reference's."""
    assert tuple(got.shape) == tuple(ref.shape), f"{what}: shape {tuple(got.shape)} != reference {tuple(ref.shape)}"
    d = dtype or got.dtype
    default = TOLERANCES.get(d, (0.0, 0.0))
    atol = default[0] if atol is None else atol
    rtol = default[1] if rtol is None else rtol
    g = got.detach().cpu()
    r = ref.detach().cpu().to(g.dtype)
    if g.is_floating_point():
        nan, inf = int(g.isnan().sum()), int(g.isinf().sum())
        ref_nan = int(r.isnan().sum())
        assert nan == ref_nan, f"{what}: {nan} of {g.numel()} elements are NaN (unwritten or poisoned; reference {ref_nan})"
        assert inf == int(r.isinf().sum()), f"{what}: {inf} elements are inf, the reference has {int(r.isinf().sum())}"
    g64, r64 = g.double(), r.double()
    err = (g64 - r64).abs()
    same = (g64 == r64) | (g64.isnan() & r64.isnan())  # equal infinities and NaN where the reference has them
    bad = (err > atol + rtol * r64.abs()) & ~same
    if bad.any():
        idx = tuple(int(i) for i in bad.nonzero()[0])
        finite = err[~same]
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {g.numel()} elements off (dtype {d}, atol {atol}, rtol {rtol}); max abs "
            f"err {finite.max().item():.3g}; first at {idx}: got {g64[idx].item():.6g}, reference {r64[idx].item():.6g}"
        )


__all__ = ["NAN", "assert_close", "assert_outside_untouched", "assert_slot_only", "assert_slot_written",
           "poisoned_slot"]  # fmt: skip
