"""The AVX512-BF16 tile backend ("avx512bf16": the tile interface over VDPBF16PS zmm, amx/tile_avx512bf16.h).

Its dot product is VDPBF16PS's, not TDPBF16PS's: per output element one fp32 chain from c, and per K pair
first the odd product a[2k+1] b[2k+1], then the even one, each addition rounded to nearest even; bf16 input
denormals and a denormal fp32 c read as zero, every denormal sum flushed to zero. So it is checked
  (a) bit for bit against the portable emulator where every partial sum is exact (integers): tile dot and conv;
  (b) bit for bit against a model of that order (below) on random data, on denormal-heavy data too;
  (c) the conv / transposed-conv parity suites and (d) the engine tests run on it where the CPU has it
      (test_bf16_conv*.py parametrise over every runnable backend; tests/engine/test_cpu_bf16.py uses the
      auto choice, which is this backend on a CPU with AVX512-BF16 and no AMX).
Native only: where the CPU lacks AVX512-BF16 everything here skips with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from bf16_testutil import backend_params

from unet_fast.kernels import cpu_bf16

TINY = 2.0**-126  # smallest normal fp32 (and bf16)
SHAPES = ((16, 16, 16), (5, 3, 7), (1, 1, 1), (16, 1, 9), (3, 16, 16), (16, 16, 1))  # (M, KP, N)


def _backend() -> cpu_bf16.TileBackend | None:
    return {b.name: b for b in cpu_bf16.tile_backends()}.get("avx512bf16")


def _need_native() -> None:
    b = _backend()
    if b is None:
        pytest.skip("the avx512bf16 tile backend is compiled only for x86-64")
    if not b.runnable:
        pytest.skip(f"avx512bf16: {b.reason}")


def _flush(v: torch.Tensor) -> torch.Tensor:
    """Denormals (|v| < 2^-126, nonzero) to a zero of their sign (v * 0 keeps the sign of a finite v)."""
    return torch.where(v.abs() < TINY, v * 0, v)


def vdpbf16ps_model(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, *, daz_ftz: bool = True,
                    odd_first: bool = True) -> torch.Tensor:  # fmt: skip
    """The documented order of the avx512bf16 backend's dot product, in fp32: a [M, 2KP] bf16, b [KP, 2N]
    bf16 (K pairs interleaved), c [M, N] fp32. Each step adds one exact product (float64 holds a bf16 x bf16
    product exactly) to the fp32 chain and rounds once to fp32 (float64 -> fp32 of a sum of two 24-bit
    values is correctly rounded: double rounding is innocuous at 53 >= 2 x 24 + 2 bits). daz_ftz / odd_first
    off give the variants the guards below compare against."""
    af, bf = a.double(), b.double()
    acc = c.clone()
    if daz_ftz:
        af, bf, acc = _flush(af), _flush(bf), _flush(acc)
    order = (1, 0) if odd_first else (0, 1)
    for k in range(b.shape[0]):
        for j in order:
            acc = (acc.double() + af[:, 2 * k + j, None] * bf[None, k, j::2]).float()
            if daz_ftz:
                acc = _flush(acc)
    return acc


def operands(m: int, kp: int, n: int, seed: int, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(m, 2 * kp, generator=g).bfloat16()
    b = torch.randn(kp, 2 * n, generator=g).bfloat16()
    c = torch.randn(m, n, generator=g) * scale
    return a, b, c


def denormal_operands(m: int, kp: int, n: int, seed: int):
    """Operands whose products and sums straddle 2^-126: a, b ~ 2^-63 (products ~2^-126, some fp32
    denormals), some exact bf16 denormals in a and b, and a c with fp32 denormals and tiny normals."""
    g = torch.Generator().manual_seed(seed)

    def spread(*shape: int) -> torch.Tensor:
        e = torch.randint(-66, -60, shape, generator=g).double()
        return torch.randn(*shape, generator=g, dtype=torch.float64) * 2.0**e

    a, b = spread(m, 2 * kp), spread(kp, 2 * n)
    a[torch.rand(a.shape, generator=g) < 0.15] = 2.0**-130  # bf16 denormals (exactly representable)
    b[torch.rand(b.shape, generator=g) < 0.15] = -(2.0**-129)
    c = torch.randn(m, n, generator=g, dtype=torch.float64) * 2.0 ** torch.randint(-130, -122, (m, n), generator=g)
    return a.bfloat16(), b.bfloat16(), c.float()


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("scale", [1.0, 1e3], ids=["c~1", "c~1e3"])
def test_tile_dot_is_the_vdpbf16ps_order_bit_for_bit(shape: tuple[int, int, int], scale: float) -> None:
    _need_native()
    a, b, c = operands(*shape, seed=3 * sum(shape), scale=scale)
    got = cpu_bf16.tile_dot(a, b, c, isa="avx512bf16")
    want = vdpbf16ps_model(a, b, c)
    assert torch.equal(got, want), (got - want).abs().max()


def test_the_order_is_a_real_check() -> None:
    """Guards the test above: on its data, the even-first order and the TDPBF16PS emulator round
    differently from the documented order, so matching the model bit for bit pins the order down."""
    _need_native()
    a, b, c = operands(16, 16, 16, seed=3 * 48)
    want = vdpbf16ps_model(a, b, c)
    assert not torch.equal(want, vdpbf16ps_model(a, b, c, odd_first=False))
    assert not torch.equal(cpu_bf16.tile_dot(a, b, c, isa="avx512bf16"), cpu_bf16.tile_dot(a, b, c, isa="portable"))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_tile_dot_denormals_as_observed_on_zen4(seed: int) -> None:
    """DAZ on the bf16 inputs and on c, FTZ after every addition, the product itself not flushed (as
    observed on AMD Zen 4 and as the SDM states it): bit for bit against the model on denormal-heavy data,
    which the model without DAZ/FTZ gets wrong (so the flushing is exercised)."""
    _need_native()
    a, b, c = denormal_operands(16, 16, 16, seed)
    got = cpu_bf16.tile_dot(a, b, c, isa="avx512bf16")
    want = vdpbf16ps_model(a, b, c)
    assert torch.equal(got, want), (got.flatten()[:8], want.flatten()[:8])
    assert not torch.equal(want, vdpbf16ps_model(a, b, c, daz_ftz=False))


def test_product_below_the_normal_range_is_not_flushed_before_its_addition() -> None:
    """c = 2^-125 plus the product 2^-63 x 2^-64 = 2^-127 (an fp32 denormal, exact) gives 2^-125 + 2^-127:
    only sums are flushed; and a c of 0 plus that product alone is flushed to 0."""
    _need_native()
    a = torch.tensor([[2.0**-63, 0.0]]).bfloat16()
    b = torch.tensor([[2.0**-64, 0.0]]).bfloat16()
    got = cpu_bf16.tile_dot(a, b, torch.tensor([[2.0**-125]]), isa="avx512bf16")
    assert got.item() == 2.0**-125 + 2.0**-127
    assert cpu_bf16.tile_dot(a, b, torch.zeros(1, 1), isa="avx512bf16").item() == 0.0


def _int_conv_operands(seed: int, n: int, h: int, w: int, cin: int, cout: int, k: int):
    """Small integers: every product and partial sum is exact in fp32, whatever the order."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-4, 5, (n, h, w, cin), generator=g).bfloat16()
    weight = torch.randint(-3, 4, (cout, cin, k, k), generator=g).float()
    bias = torch.randint(-10, 11, (cout,), generator=g).float()
    return x, weight, bias


@pytest.mark.parametrize("case", [(2, 9, 37, 64, 40, 3, 1, 1), (1, 11, 13, 17, 33, 3, 2, 1), (1, 7, 9, 3, 5, 7, 2, 3)],
                         ids=lambda c: "n{}_{}x{}_c{}-{}_k{}s{}p{}".format(*c))  # fmt: skip
def test_conv_equals_portable_on_integers(case: tuple) -> None:
    _need_native()
    n, h, w, cin, cout, k, s, p = case
    x, weight, bias = _int_conv_operands(sum(case), n, h, w, cin, cout, k)
    packed = cpu_bf16.pack_conv_weight(weight)
    got = cpu_bf16.conv2d(x, packed, bias, stride=s, padding=p, out_dtype=torch.float32, isa="avx512bf16")
    want = cpu_bf16.conv2d(x, packed, bias, stride=s, padding=p, out_dtype=torch.float32, isa="portable")
    assert torch.equal(got, want)
    ref = cpu_bf16.conv2d_reference(x, weight, bias, stride=s, padding=p)
    assert torch.equal(got.double(), ref)  # exact: the integer sums are


@pytest.mark.parametrize("act", ["none", "relu", "leaky_relu", "silu"])
@pytest.mark.parametrize("residual_dtype", [None, torch.bfloat16, torch.float32], ids=["nores", "res_bf16", "res_f32"])
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float32], ids=["out_bf16", "out_f32"])
def test_vector_epilogue_equals_the_scalar_one(act: str, residual_dtype: torch.dtype | None,
                                               out_dtype: torch.dtype) -> None:  # fmt: skip
    """The backend's vectorised block epilogue (bias, residual, activation, bf16 rounding) against the
    portable backend's scalar loop, bit for bit: on integer data the accumulators are equal, so any
    difference is the epilogue's. Cout = 40 (a partial 16-column half), rows that end mid-block, residual
    values with fractions (bf16 roundings, ties), a NaN and signed zeros in the residual."""
    _need_native()
    x, weight, bias = _int_conv_operands(4, 2, 7, 19, 33, 40, 3)
    bias = bias / 8  # fractions: the sums round when stored as bf16
    packed = cpu_bf16.pack_conv_weight(weight)
    residual = None
    if residual_dtype is not None:
        g = torch.Generator().manual_seed(5)
        residual = (torch.randn(2, 7, 19, 40, generator=g) * 300).to(residual_dtype)
        residual[0, 0, 0, :3] = torch.tensor([float("nan"), -0.0, 0.0])
    outs = []
    for isa in ("avx512bf16", "portable"):
        buf = torch.full((2, 7, 19, 43), float("nan"), dtype=out_dtype)
        slot = buf[..., 1:41]
        cpu_bf16.conv2d(x, packed, bias, padding=1, act=act, negative_slope=0.125, residual=residual, out=slot,
                        isa=isa)  # fmt: skip
        outs.append(buf)
    got, want = outs
    same = (got == want) | (got.isnan() & want.isnan())
    assert bool(same.all()), f"{int((~same).sum())} elements differ"
    assert torch.equal(got.isnan(), want.isnan())
    # the slot written (the poison outside it kept), and the residual's NaN through every act but ReLU (-> 0)
    assert int(got[..., 1:41].isnan().sum()) == (1 if residual is not None and act != "relu" else 0)
    assert bool(got[..., :1].isnan().all() and got[..., 41:].isnan().all())
    zeros = got == 0  # signed zeros must match too (-0 + 0 is +0 in both)
    assert torch.equal(torch.signbit(got[zeros]), torch.signbit(want[zeros]))


def test_conv_transpose_equals_portable_on_integers() -> None:
    _need_native()
    g = torch.Generator().manual_seed(9)
    x = torch.randint(-4, 5, (2, 5, 7, 40), generator=g).bfloat16()
    weight = torch.randint(-3, 4, (40, 17, 2, 2), generator=g).float()
    packed = cpu_bf16.pack_conv_transpose_weight(weight)
    got = cpu_bf16.conv_transpose2x2(x, packed, out_dtype=torch.float32, isa="avx512bf16")
    want = cpu_bf16.conv_transpose2x2(x, packed, out_dtype=torch.float32, isa="portable")
    assert torch.equal(got, want)
    assert torch.equal(got.double(), cpu_bf16.conv_transpose2x2_reference(x, weight))
    # Ct = 17 has 16-column halves straddling two taps (the scalar epilogue), Ct = 32 none (the vector one):
    # both with a bias and a bf16 output, bit for bit like the portable backend.
    for cout in (17, 32):
        w = torch.randint(-3, 4, (40, cout, 2, 2), generator=g).float()
        b = torch.randint(-40, 41, (cout,), generator=g).float() / 16
        p = cpu_bf16.pack_conv_transpose_weight(w)
        got = cpu_bf16.conv_transpose2x2(x, p, b, act="relu", isa="avx512bf16")
        assert torch.equal(got, cpu_bf16.conv_transpose2x2(x, p, b, act="relu", isa="portable"))


def _cpuinfo_flags() -> set[str] | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return None


def test_detection_agrees_with_the_kernel() -> None:
    flags, b = _cpuinfo_flags(), _backend()
    if flags is None or b is None:
        pytest.skip("no /proc/cpuinfo flags line, or the backend is not compiled (not x86-64)")
    # Linux lists the avx512* flags only when it enables the AVX-512 state (XCR0), which our check reads.
    has = {"avx512f", "avx512bw", "avx512vl", "avx512_bf16"} <= flags
    assert b.runnable == has, (b, sorted(f for f in flags if f.startswith("avx512")))
    if not has:
        assert b.reason.startswith("the ")


def test_auto_order_amx_then_avx512bf16_then_portable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cpu_bf16.ISA_ENV, raising=False)
    monkeypatch.delenv("UNET_FAST_KERNELS", raising=False)
    by_name = {b.name: b for b in cpu_bf16.tile_backends()}
    assert by_name["portable"].rank < by_name.get("avx512bf16", by_name["portable"]).rank
    if "amx" in by_name and "avx512bf16" in by_name:
        assert by_name["avx512bf16"].rank < by_name["amx"].rank
    want = next(name for name in ("amx", "avx512bf16", "portable") if name in by_name and by_name[name].runnable)
    assert cpu_bf16.choose_backend().name == want
    monkeypatch.setenv("UNET_FAST_KERNELS", "bf16=portable")
    assert cpu_bf16.choose_backend().name == "portable"
    monkeypatch.setenv("UNET_FAST_KERNELS", "bf16=AVX512BF16")
    if by_name.get("avx512bf16") is not None and by_name["avx512bf16"].runnable:
        assert cpu_bf16.choose_backend().name == "avx512bf16"
    monkeypatch.delenv("UNET_FAST_KERNELS")
    monkeypatch.setenv(cpu_bf16.ISA_ENV, "portable")  # the deprecated alias still forces
    with pytest.warns(DeprecationWarning, match="UNET_FAST_KERNELS=bf16=portable"):
        assert cpu_bf16.choose_backend().name == "portable"


def test_forcing_avx512bf16_without_it_is_a_clear_error() -> None:
    b = _backend()
    if b is None or b.runnable:
        pytest.skip("this machine runs AVX512-BF16 (or does not compile it): nothing to refuse")
    with pytest.raises(ValueError, match="'avx512bf16' cannot run on this machine: the"):
        cpu_bf16.choose_backend("avx512bf16")


def test_info_lists_the_backend() -> None:
    from unet_fast.info import collect

    if _backend() is None:
        pytest.skip("the avx512bf16 tile backend is compiled only for x86-64")
    why = collect()["backends"]["cpu"]["why"]
    assert "avx512bf16" in why.split("bf16 tiles:", 1)[1]


@pytest.mark.parametrize("isa", backend_params(only=("avx512bf16",)))
def test_peak_loop_counts_its_work(isa: str) -> None:
    """The register-resident peak loop returns iters x 32 / 2^20 like the tile loops (so the FLOP count per
    iteration the benchmark divides by is the work the loop did)."""
    for iters in (1, 5):
        assert cpu_bf16.tile_peak(iters, isa=isa) == iters * 32 / 2**20
