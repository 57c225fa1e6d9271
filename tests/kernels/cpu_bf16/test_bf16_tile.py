"""The tile interface's arithmetic: one TDPBF16PS per backend against Intel's pseudocode (emulated here in
fp32 torch ops, one rounding per addition) and against float64; AMX detection against /proc/cpuinfo."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from bf16_testutil import TDPBF16PS_BACKENDS, backend_params

from unet_fast.kernels import cpu_bf16

SHAPES = ((16, 16, 16), (5, 3, 7), (1, 1, 1), (16, 1, 9), (3, 16, 16))  # (M, KP, N)


def pseudocode(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """TDPBF16PS as the Intel SDM's operation section states it: per output element, the even and the odd
    products of the K pairs (in increasing k) summed in two fp32 chains from zero, then c + (even + odd).
    In fp32 torch ops a bf16 x bf16 product is exact, so `chain + product` is the SDM's FMA step (these
    operands have no denormals)."""
    af, bf = a.float(), b.float()
    even = torch.zeros_like(c)
    odd = torch.zeros_like(c)
    for k in range(b.shape[0]):
        even = even + af[:, 2 * k, None] * bf[None, k, 0::2]
        odd = odd + af[:, 2 * k + 1, None] * bf[None, k, 1::2]
    return c + (even + odd)


def intrinsics_guide_form(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The Intrinsics Guide's shorter pseudocode: one chain into c, even then odd product per K pair."""
    af, bf, acc = a.float(), b.float(), c.clone()
    for k in range(b.shape[0]):
        acc = acc + af[:, 2 * k, None] * bf[None, k, 0::2]
        acc = acc + af[:, 2 * k + 1, None] * bf[None, k, 1::2]
    return acc


def operands(m: int, kp: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(m, 2 * kp, generator=g).bfloat16()
    b = torch.randn(kp, 2 * n, generator=g).bfloat16()
    c = torch.randn(m, n, generator=g)
    return a, b, c


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_portable_tile_dot_is_the_pseudocode_bit_for_bit(shape: tuple[int, int, int]) -> None:
    a, b, c = operands(*shape, seed=sum(shape))
    got = cpu_bf16.tile_dot(a, b, c, isa="portable")
    assert torch.equal(got, pseudocode(a, b, c)), (got - pseudocode(a, b, c)).abs().max()


def test_the_two_pseudocodes_differ() -> None:
    """Guards the test above: on random data the SDM's order and the Intrinsics Guide's one chain round
    differently, so matching the SDM bit for bit is a real check of the order."""
    a, b, c = operands(16, 16, 16, seed=1)
    assert not torch.equal(pseudocode(a, b, c), intrinsics_guide_form(a, b, c))


@pytest.mark.parametrize("isa", backend_params())
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_tile_dot_vs_float64(isa: str, shape: tuple[int, int, int]) -> None:
    a, b, c = operands(*shape, seed=7 * sum(shape))
    got = cpu_bf16.tile_dot(a, b, c, isa=isa)
    # ref[m, n] = c + sum_j A[m, j] B[j, n] with B[2k + i, n] = b[k, 2n + i]
    bmat = b.double().view(shape[1], shape[2], 2).permute(0, 2, 1).reshape(2 * shape[1], shape[2])
    ref = c.double() + a.double() @ bmat
    # fp32 accumulation of 2 KP + 1 terms: worst case (2 KP + 1) 2^-24 sum |terms| per element
    bound = (2 * shape[1] + 1) * 2.0**-24 * (c.double().abs() + a.double().abs() @ bmat.abs())
    assert ((got.double() - ref).abs() <= bound).all()


@pytest.mark.parametrize("isa", backend_params())
def test_tile_dot_exact_on_integers(isa: str) -> None:
    """Small integers: every partial sum is exact, so any summation order gives the same bits; a native
    mismatch here is a layout (interleave) error, not rounding."""
    g = torch.Generator().manual_seed(3)
    a = torch.randint(-8, 9, (16, 32), generator=g).bfloat16()
    b = torch.randint(-8, 9, (16, 32), generator=g).bfloat16()
    c = torch.randint(-100, 101, (16, 16), generator=g).float()
    assert torch.equal(cpu_bf16.tile_dot(a, b, c, isa=isa), pseudocode(a, b, c))


@pytest.mark.parametrize("isa", backend_params())
def test_tile_dot_denormals_flushed(isa: str) -> None:
    """TDPBF16PS (and VDPBF16PS) treat denormal bf16 inputs as zero and flush denormal results (Intel SDM);
    checked natively where AMX or AVX512-BF16 runs, which verifies the emulator's assumption."""
    a = torch.zeros(1, 2, dtype=torch.bfloat16)
    b = torch.ones(1, 2, dtype=torch.bfloat16)
    a[0, 0], b[0, 0] = 1e-39, 2.0**100  # a bf16 denormal (below 2^-126) times 2^100: 8e-9 unless flushed
    got = cpu_bf16.tile_dot(a, b, torch.zeros(1, 1), isa=isa)
    assert got.item() == 0.0
    a[0, 0], b[0, 0] = 1e-20, 1e-20  # normal inputs whose product, 1e-40, is an fp32 denormal
    got = cpu_bf16.tile_dot(a, b, torch.zeros(1, 1), isa=isa)
    assert got.item() == 0.0


@pytest.mark.parametrize("isa", backend_params(only=TDPBF16PS_BACKENDS))
def test_native_matches_portable(isa: str) -> None:
    """The TDPBF16PS backends on the same random tile: the same arithmetic, so the same bits. The emulator
    follows the operation section of the Intel SDM (vol. 2, TDPBF16PS: even / odd chains from zero, then
    C + (even + odd)), which is Intel's normative text and what Bochs' AMX model implements (cpu/avx/amx.cc);
    the Intrinsics Guide's shorter pseudocode (one chain into C) rounds differently. No AMX run has confirmed
    which one the hardware follows: if this fails on the first AMX machine, the message says whether the
    hardware matched the Intrinsics Guide's order instead (then the emulator, its tests and docs/amx_bf16.md
    change to that order; the vs-float64 bounds and every conv parity test hold either way)."""
    a, b, c = operands(16, 16, 16, seed=11)
    got = cpu_bf16.tile_dot(a, b, c, isa=isa)
    want = cpu_bf16.tile_dot(a, b, c, isa="portable")
    if not torch.equal(got, want):
        diff = int((got != want).sum())
        guide = torch.equal(got, intrinsics_guide_form(a, b, c))
        pytest.fail(f"{isa} differs from the SDM order in {diff} of 256 elements (max |diff| "
                    f"{(got - want).abs().max().item():.3e}); matches the Intrinsics Guide's one-chain order: {guide}")  # fmt: skip


@pytest.mark.parametrize("isa", backend_params())
def test_tile_peak_loop_does_its_work(isa: str) -> None:
    assert cpu_bf16.tile_peak(3, isa=isa) == 3 * 32 / 2**20
    with pytest.raises(ValueError, match="iters"):
        cpu_bf16.tile_peak(0, isa=isa)


def test_tile_dot_rejects_bad_shapes() -> None:
    a, b, c = operands(4, 4, 4, seed=0)
    with pytest.raises(ValueError, match="shapes"):
        cpu_bf16.tile_dot(a, b[:3], c, isa="portable")
    with pytest.raises(ValueError, match="bfloat16"):
        cpu_bf16.tile_dot(a.float(), b, c, isa="portable")
    big = torch.zeros(17, 2, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match=r"1\.\.16"):
        cpu_bf16.tile_dot(big, torch.zeros(1, 2, dtype=torch.bfloat16), torch.zeros(17, 1), isa="portable")


def _cpuinfo_flags() -> set[str] | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return None


def test_amx_detection_agrees_with_the_kernel() -> None:
    flags = _cpuinfo_flags()
    if flags is None:
        pytest.skip("no /proc/cpuinfo flags line on this OS")
    amx = {b.name: b for b in cpu_bf16.tile_backends()}.get("amx")
    if amx is None:
        pytest.skip("the amx tile backend is compiled only for x86-64")
    # The amx build also runs AVX-512 code (UF_TARGET_AMX includes it), so its detection requires that too.
    has = {"amx_tile", "amx_bf16", "avx512f", "avx512dq", "avx512bw", "avx512vl", "avx512_bf16"} <= flags
    # Linux lists amx_tile/amx_bf16 only when it supports the tile state; the permission request then succeeds
    # (unless a thread's sigaltstack is too small for the AMX signal frame: the reason then says ENOSPC).
    assert amx.runnable == has, (amx, sorted(f for f in flags if f.startswith(("amx", "avx512"))))
    if not has:
        assert amx.reason


def test_forcing_amx_without_it_is_a_clear_error() -> None:
    amx = {b.name: b for b in cpu_bf16.tile_backends()}.get("amx")
    if amx is None or amx.runnable:
        pytest.skip("this machine runs AMX (or does not compile it): nothing to refuse")
    with pytest.raises(ValueError, match="'amx' cannot run on this machine: the"):
        cpu_bf16.choose_backend("amx")
    with pytest.raises(ValueError, match="unknown bf16 tile isa"):
        cpu_bf16.choose_backend("avx9000")


def test_info_names_the_tile_backends() -> None:
    from unet_fast.info import collect

    cpu = collect()["backends"]["cpu"]
    names = [b["name"] for b in cpu["kernels"]["bf16_tiles"]]
    assert names == [b.name for b in cpu_bf16.tile_backends()] and "portable" in names
    assert "bf16 tiles: portable" in cpu["why"]


def test_info_names_the_bf16_conv3x3_algorithm(monkeypatch: pytest.MonkeyPatch) -> None:
    """`unet-fast info` says what a bf16 3x3 conv runs here (the registry's choice for a typical one): the
    Winograd on bf16 activations on every tile backend but AMX, the tile / direct conv with the reason otherwise
    (UNET_FAST_KERNELS bf16_winograd=off)."""
    from unet_fast.info import collect
    from unet_fast.kernels import cpu_isa

    monkeypatch.delenv("UNET_FAST_KERNELS", raising=False)
    kernels = collect()["backends"]["cpu"]["kernels"]
    tiles = kernels["bf16_tile_backend"]
    if tiles == "amx":
        assert kernels["bf16_conv3x3"].startswith("bf16 tiles (amx) (not: the AMX tile conv"), kernels
    else:
        # the tile follows the output size (cpu_winograd.f6_decision): info names both typical sizes
        isa = cpu_isa.best().name
        assert kernels["bf16_conv3x3"].startswith(
            f"at 256x256 output: Winograd F(6x6,3x3) on bf16, fp32 compute, {isa}; "
            f"at 32x32 output: Winograd F(4x4,3x3) on bf16, fp32 compute, {isa} (not: output 32x32: F(6x6)"), kernels
    monkeypatch.setenv("UNET_FAST_KERNELS", "bf16_winograd=off")
    kernels = collect()["backends"]["cpu"]["kernels"]
    why = kernels["bf16_conv3x3"]
    assert "(not: UNET_FAST_KERNELS bf16_winograd=off" in why, why
    if tiles is not None:
        assert why.startswith(f"bf16 {'direct' if tiles == 'avx512bf16' else 'tiles'} ({tiles})"), why
    assert "bf16 3x3 convs: " + why in collect()["backends"]["cpu"]["why"]
