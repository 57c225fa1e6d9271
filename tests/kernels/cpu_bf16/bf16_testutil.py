"""Helpers of the bf16 tile tests: the tile backends to run, and the per-dtype accuracy checks of issue 17
(against a float64 reference computed from the same bf16-rounded inputs and weights)."""

from __future__ import annotations

import kernel_testutil as ku
import pytest
import torch
from torch import Tensor

from unet_fast.kernels import cpu_bf16

NAN = ku.NAN
U_BF16 = 2.0**-8  # unit roundoff of bf16 (8-bit significand): one rounding errs by at most U_BF16 |v|
U_F32 = 2.0**-24
F32_REL_L2 = 1e-5  # fp32 outputs: only accumulation error


# The backends whose dot product is TDPBF16PS's own order (bit-identical to each other); "avx512bf16" runs
# VDPBF16PS's order instead (tests/kernels/cpu_bf16/test_bf16_avx512bf16.py).
TDPBF16PS_BACKENDS = ("portable", "amx")


def backend_params(only: tuple[str, ...] | None = None) -> list:
    """Every compiled tile backend (or those named in `only`) as a pytest param; the ones this CPU cannot run
    skip with the reason (e.g. "amx: the CPU has no AMX-TILE ..." on AMD Zen 4)."""
    params = []
    for b in cpu_bf16.tile_backends():
        if only is not None and b.name not in only:
            continue
        marks = () if b.runnable else (pytest.mark.skip(reason=f"{b.name}: {b.reason}"),)
        params.append(pytest.param(b.name, id=b.name, marks=marks))
    return params


def assert_f32_close(got: Tensor, ref: Tensor, what: str) -> None:
    """fp32 outputs: NaN-free (every element written) and within F32_REL_L2 of the float64 reference."""
    nan = int(got.isnan().sum())
    assert nan == 0, f"{what}: {nan} of {got.numel()} elements are NaN (unwritten or poisoned)"
    err = ((got.double() - ref).norm() / ref.norm().clamp_min(1e-300)).item()
    assert err <= F32_REL_L2, f"{what}: fp32 rel-L2 {err:.3e} > {F32_REL_L2:.0e}"


def assert_bf16_one_rounding(got: Tensor, ref: Tensor, abs_ref: Tensor, terms: int, what: str) -> None:
    """Every bf16 element within one bf16 rounding of the float64 reference, plus the worst-case fp32
    accumulation error of `terms` products (terms * 2^-24 * sum |products|, Higham's gamma_n bound, from
    `abs_ref` = the same conv on |x|, |w|): no error beyond the final store."""
    nan = int(got.isnan().sum())
    assert nan == 0, f"{what}: {nan} of {got.numel()} elements are NaN (unwritten or poisoned)"
    acc_err = terms * U_F32 * abs_ref
    tol = U_BF16 * ref.abs() + (1 + U_BF16) * acc_err
    excess = (got.double() - ref).abs() - tol
    bad = int((excess > 0).sum())
    if bad:
        i = int(excess.flatten().argmax())
        raise AssertionError(
            f"{what}: {bad} of {got.numel()} bf16 elements beyond one rounding; worst at flat index {i}: "
            f"got {got.flatten()[i].item()!r}, reference {ref.flatten()[i].item()!r}, tolerance {tol.flatten()[i].item():.3e}"
        )


def lively(cin: int, cout: int, k: int, seed: int) -> tuple[Tensor, Tensor]:
    """He-normal [cout, cin, k, k] weight and a bias of the size trained layers have."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(cout, cin, k, k, generator=g) * (2.0 / (cin * k * k)) ** 0.5
    return w, 0.1 * torch.randn(cout, generator=g)


def slot_of_poisoned(n: int, h: int, w: int, c: int, g: torch.Generator, before: int = 2,
                     after: int = 3) -> tuple[Tensor, Tensor]:  # fmt: skip
    """(buffer, slot): random bf16 channels [before, before + c) of a NaN-filled wider buffer, so a read
    outside the slot poisons the result."""
    buf, slot = ku.poisoned_slot((n, h, w, c), torch.bfloat16, before=before, after=after)
    slot.copy_(torch.randn(n, h, w, c, generator=g))
    return buf, slot


def poisoned_out(shape: tuple[int, ...], dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """(buffer, slot): an output slot, channels [3, 3 + C), of a NaN-filled [N, H, W, 3 + C + 5] buffer."""
    return ku.poisoned_slot(shape, dtype, before=3, after=5)  # type: ignore[arg-type]


def assert_only_slot_written(buf: Tensor, c: int, what: str) -> None:
    """A poisoned_out buffer after the kernel: every slot element written, nothing outside it."""
    ku.assert_slot_only(buf, 3, 3 + c, what)
