"""The Winograd F(4x4, 3x3) and F(6x6, 3x3) conv on bf16 activations (cpu_winograd.conv3x3_winograd with bf16 tensors, issue 17):
bf16 views / residual / out / pool_out, fp32 bias and transformed weight (of the bf16-rounded weight), fp32
compute, each output rounded once to bf16.

Two truths, on every CPU kernel variant this machine runs (weights packed per variant):
- exact: the fp32 Winograd kernel of the same variant, run on the same values (the bf16 input as the kernel
  stages it, widened exactly: plain, window and nearest reads copy; bilinear is blended in fp32 and rounded
  once to bf16, the bits the bf16 tile conv stages, cpu_bf16.read_view_bf16) with the same packed weight,
  then rounded to bf16: bit-equal. Both run the same fp32 operations, so this is "no error beyond the final
  store" exactly. The fp32 Winograd's own accuracy is tests/kernels/winograd/test_winograd_conv.py's.
- bound: the float64 conv of the staged input and the bf16-rounded weight (cpu_bf16.conv2d_reference):
  every element within one bf16 rounding plus the fp32 accumulation bound of the 9 Cin products
  (bf16_testutil.assert_bf16_one_rounding, the bf16 tile conv's budget). It holds on these Gaussian inputs
  with He-normal weights; it is not a guarantee of Winograd, whose fp32 error can exceed the direct conv's
  on cancelling outputs of a wide-dynamic-range patch (docs/winograd.md, "bf16 activations").

Odd sizes, batch 2, channel counts off the vector widths (13, 19, 21, 29, 37), NaN-poisoned input buffers
and output slots, the pool output exactly the 2x2 max of the stored output.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from bf16_testutil import (
    assert_bf16_one_rounding,
    assert_only_slot_written,
    lively,
    poisoned_out,
    slot_of_poisoned,
)

from unet_fast.kernels import cpu_bf16, cpu_isa, cpu_winograd, registry
from unet_fast.kernels.spec import InputView, Resample

ISAS = cpu_winograd.available_isas()

pytestmark = pytest.mark.skipif(not ISAS, reason="unet_fast._C was built without the Winograd kernel")










def run(views: list[InputView], cout: int, pad: int, isa: str, seed: int, *, act: str = "relu",
        residual: bool = False, pool: bool = False, tile: int = 4) -> torch.Tensor:  # fmt: skip
    """The bf16 Winograd F(tile x tile) on `views` into poisoned slots, checked against both truths; returns
    out."""
    cin = sum(v.channels for v in views)
    weight, bias = lively(cin, cout, 3, seed)
    packed = cpu_winograd.pack_winograd_weight(weight, isa=isa, io_dtype=torch.bfloat16, tile=tile)
    staged = torch.cat([cpu_bf16.read_view_bf16(v) for v in views], dim=3)
    n, h, w, _ = staged.shape
    shape = (n, h + 2 * pad - 2, w + 2 * pad - 2, cout)
    res = slot_of_poisoned(*shape, torch.Generator().manual_seed(seed + 1))[1] if residual else None
    before = [v.tensor.clone() for v in views]
    buf, out = poisoned_out(shape, torch.bfloat16)
    pbuf, pool_out = poisoned_out((n, shape[1] // 2, shape[2] // 2, cout), torch.bfloat16) if pool else (None, None)
    what = f"{[tuple(v.tensor.shape) for v in views]} -> {shape} p{pad} {act} isa={isa} F({tile})"
    got = cpu_winograd.conv3x3_winograd(views, packed, bias, padding=pad, act=act, residual=res, out=out,
                                        pool_out=pool_out)  # fmt: skip
    assert got.data_ptr() == out.data_ptr()
    for v, b in zip(views, before, strict=True):
        assert torch.equal(v.tensor, b), f"{what}: an input view was changed"
    assert_only_slot_written(buf, cout, f"{what} out")

    # exact: the fp32 kernel on the same values and the same packed U, rounded once
    f32 = dataclasses.replace(packed, io_dtype=torch.float32)
    ref32 = cpu_winograd.conv3x3_winograd([staged.float()], f32, bias, padding=pad, act=act,
                                          residual=None if res is None else res.float())  # fmt: skip
    assert torch.equal(got, ref32.bfloat16()), f"{what}: not the bf16 rounding of the fp32 Winograd"
    # bound: within one bf16 rounding of the float64 conv (+ the fp32 accumulation bound)
    ref = cpu_bf16.conv2d_reference(staged, weight, bias, padding=pad, act=act,
                                    residual=None if res is None else res.double())  # fmt: skip
    absx = F.conv2d(staged.double().abs().permute(0, 3, 1, 2), weight.bfloat16().double().abs(), padding=pad)
    abs_ref = absx.permute(0, 2, 3, 1) + bias.double().abs() + (0 if res is None else res.double().abs())
    assert_bf16_one_rounding(got, ref, abs_ref, 9 * cin + 2, what)
    if pool:
        assert_only_slot_written(pbuf, cout, f"{what} pool_out")
        expect = F.max_pool2d(out.float().permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
        assert torch.equal(pool_out.float(), expect), f"{what}: pool_out is not the 2x2 max of out"
    return got


@pytest.mark.parametrize("tile", cpu_winograd.TILES)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize(("n", "h", "w", "cin", "cout", "pad", "act"), [
    (2, 13, 11, 37, 29, 1, "relu"),
    (2, 9, 14, 24, 40, 0, "leaky_relu"),
    (1, 4, 4, 16, 16, 1, "none"),  # one tile
    (3, 6, 23, 19, 21, 1, "silu"),
    (2, 25, 37, 21, 13, 1, "relu"),  # not multiples of 6: partial F(6x6) tiles on every edge
    (2, 7, 13, 29, 19, 0, "leaky_relu"),
], ids=["13x11_p1", "9x14_p0", "4x4_one_tile", "n3_6x23", "25x37_p1", "7x13_p0"])  # fmt: skip
def test_plain_input(n: int, h: int, w: int, cin: int, cout: int, pad: int, act: str, isa: str, tile: int) -> None:
    x = slot_of_poisoned(n, h, w, cin, torch.Generator().manual_seed(h * w))[1]
    run([InputView(x)], cout, pad, isa, seed=h + w, act=act, tile=tile)


@pytest.mark.parametrize("tile", cpu_winograd.TILES)
@pytest.mark.parametrize("isa", ISAS)
def test_virtual_concat_residual_and_pool(isa: str, tile: int) -> None:
    """A U-Net decoder conv: skip 19 + up 13 channels read from slots of two buffers, a residual added before
    the activation, and the 2x2 max-pool output (odd output: floor mode)."""
    g = torch.Generator().manual_seed(5)
    views = [InputView(slot_of_poisoned(2, 15, 13, 19, g)[1]),
             InputView(slot_of_poisoned(2, 15, 13, 13, g, before=1)[1])]
    run(views, 21, 1, isa, seed=5, residual=True, pool=True, tile=tile)
    run(views, 33, 0, isa, seed=6, pool=True, tile=tile)


@pytest.mark.parametrize("tile", cpu_winograd.TILES)
@pytest.mark.parametrize("isa", ISAS)
def test_crop_window_and_zero_padding_window(isa: str, tile: int) -> None:
    """Ronneberger's centre crop of the skip, and milesial's F.pad (a window past the source's edge)."""
    g = torch.Generator().manual_seed(7)
    skip, up = slot_of_poisoned(2, 21, 24, 32, g)[1], slot_of_poisoned(2, 13, 16, 17, g)[1]
    run([InputView(skip, offset=(4, 4), size=(13, 16)), InputView(up)], 24, 0, isa, seed=7, tile=tile)
    run([InputView(up, offset=(-1, -2), size=(15, 19))], 19, 1, isa, seed=8, tile=tile)


@pytest.mark.parametrize("tile", cpu_winograd.TILES)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize(("mode", "size", "align"), [
    ("nearest", (14, 22), False),
    ("nearest", (19, 23), False),
    ("bilinear", (14, 22), False),
    ("bilinear", (15, 21), True),
], ids=["nearest_2x", "nearest_odd", "bilinear_2x", "bilinear_odd_ac"])  # fmt: skip
def test_resample_on_read(mode: str, size: tuple[int, int], align: bool, isa: str, tile: int) -> None:
    g = torch.Generator().manual_seed(size[0] + size[1])
    low, skip = slot_of_poisoned(2, 7, 11, 33, g)[1], slot_of_poisoned(2, *size, 17, g)[1]
    run([InputView(skip), InputView(low, Resample(mode, size, align))], 19, 1, isa, seed=size[1], tile=tile)


@pytest.mark.parametrize("isa", ISAS)
def test_store_rounds_like_torch(isa: str) -> None:
    """The bf16 store on every variant, full and partial vectors, bit for bit against torch's fp32 -> bf16: with
    a zero weight the output is exactly the fp32 bias (+ a bf16 residual of zeros), so ties to even (both
    parities), values that round up into the next binade, to infinity (fp32 max and the tie at bf16 max),
    denormals (the largest rounds up to the smallest normal) and NaN (either sign) reach the store. The
    specials fill the first channels and the last ones, where the partial vector is (Cout = 2 n + 7 is no
    multiple of 8 or 16)."""
    bits = [0x3F808000, 0x3F818000, 0x3F804000, 0xBF808000, 0x3FFFFFFF, 0x3FFF8000, 0x7F7F7FFF, 0x7F7F8000,
            0x7F7FFFFF, 0xFF7FFFFF, 0x007FFFFF, 0x00008000, 0x00018000, 0x80000001, 0x7F800000, 0xFF800000,
            0x7FC00000, 0xFFC00001, 0x7F800001, 0x00000000, 0x477FE000, 0x00800000, 0x3F7FFFFF]  # fmt: skip
    specials = torch.tensor(bits, dtype=torch.int64).to(torch.int32).view(torch.float32)  # wraps like uint32
    n = specials.numel()
    cout = 2 * n + 7
    bias = torch.cat([specials, torch.randn(7), specials])
    x = torch.randn(2, 5, 7, 16).bfloat16()
    packed = cpu_winograd.pack_winograd_weight(torch.zeros(cout, 16, 3, 3), isa=isa, io_dtype=torch.bfloat16)
    res = torch.zeros(2, 5, 7, cout, dtype=torch.bfloat16)
    got = cpu_winograd.conv3x3_winograd([x], packed, bias, padding=1, residual=res)
    want = bias.bfloat16().expand(2, 5, 7, cout)
    assert want[0, 0, 0, 7].isinf() and want[0, 0, 0, 4] == 2.0  # the tie at bf16 max overflows; next binade
    nan = want.isnan()
    assert torch.equal(got.isnan(), nan)
    assert (got.view(torch.int16)[nan] == 0x7FC0).all(), "NaN must store as the quiet NaN 0x7FC0"
    assert torch.equal(got[~nan].view(torch.int16), want[~nan].view(torch.int16))


def test_refuses_mixed_dtypes_and_a_weight_packed_for_the_other_dtype() -> None:
    x = torch.randn(1, 6, 6, 16).bfloat16()
    w = torch.randn(8, 16, 3, 3)
    packed = cpu_winograd.pack_winograd_weight(w, io_dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="one dtype"):
        cpu_winograd.conv3x3_winograd([x], packed, padding=1, out=torch.empty(1, 6, 6, 8))
    with pytest.raises(ValueError, match="dtype"):  # the shared argument checks name the mismatch
        cpu_winograd.conv3x3_winograd([x, x.float()], cpu_winograd.pack_winograd_weight(torch.randn(8, 32, 3, 3),
                                      io_dtype=torch.bfloat16), padding=1)  # fmt: skip
    with pytest.raises(ValueError, match=r"packed for torch\.float32"):
        cpu_winograd.conv3x3_winograd([x], cpu_winograd.pack_winograd_weight(w), padding=1)
    with pytest.raises(ValueError, match=r"packed for torch\.bfloat16"):
        cpu_winograd.conv3x3_winograd([x.float()], packed, padding=1)
    with pytest.raises(ValueError, match="io_dtype"):
        cpu_winograd.pack_winograd_weight(w, io_dtype=torch.float16)
    with pytest.raises(ValueError, match="bias must be a float32"):
        cpu_winograd.conv3x3_winograd([x], packed, torch.zeros(8, dtype=torch.bfloat16), padding=1)
    # the weight is rounded to bf16 before the transform: packing w and its bf16 rounding gives the same U
    assert torch.equal(packed.data, cpu_winograd.pack_winograd_weight(w.bfloat16(), io_dtype=torch.bfloat16).data)
    assert not torch.equal(packed.data, cpu_winograd.pack_winograd_weight(w).data)


def test_bf16_winograd_gate() -> None:
    """auto: Winograd on every tile backend but AMX (and without a tile backend), for the 3x3 shapes its
    `supports` takes; bf16_winograd=on / off (or 1 / 0) force it on / off; exact=True refuses it (an
    approximate kernel); a bad setting is a ValueError."""
    from unet_fast.graph.ir import Conv, Slice
    from unet_fast.kernels.registry import Choices, Context

    def gate(forced: str, tiles: str | None) -> str | None:
        context = Context(Choices.parse(forced))
        context._rows["bf16"] = tiles  # the tile backend chosen (what a CPU with it would resolve)
        return cpu_winograd.bf16_gate(context)

    def step(shape: tuple[int, ...], stride: int = 1) -> Conv:
        return Conv("c", [Slice("x", 0, shape[1])], torch.zeros(shape), None, (stride, stride), (1, 1), (1, 1),
                    "relu", 0.01, Slice("y", 0, shape[0]))  # fmt: skip

    assert gate("", "avx512bf16") is None and gate("", "portable") is None and gate("", None) is None
    assert "AMX" in gate("", "amx")
    assert cpu_winograd.supports(step((64, 64, 3, 3)), torch.bfloat16) is None
    assert "input channels" in cpu_winograd.supports(step((64, 3, 3, 3)), torch.bfloat16)
    assert "3x3" in cpu_winograd.supports(step((64, 64, 1, 1)), torch.bfloat16)
    assert "stride 1" in cpu_winograd.supports(step((64, 64, 3, 3), stride=2), torch.bfloat16)
    wino = registry.get(f"cpu.conv2d.bf16_winograd.{cpu_isa.best().name}")
    assert wino.approximate and "exact" in Context(Choices(exact=True)).eligible(wino)
    assert gate("bf16_winograd=on", "amx") is None and gate("bf16_winograd=1", "amx") is None
    assert "bf16_winograd=off" in gate("bf16_winograd=off", "avx512bf16")
    assert "bf16_winograd=off" in gate("bf16_winograd=0", None)
    with pytest.raises(ValueError, match="auto, on or off"):
        gate("bf16_winograd=yes", "avx512bf16")


@pytest.mark.skipif(not cpu_bf16.available_tile_backends(), reason="unet_fast._C without bf16 tile ops")
def test_bf16_conv_kernels_take_any_float_bias() -> None:
    """Every bf16 conv kernel of the registry takes what the tile conv takes, a bias of any float dtype used as
    fp32, the bf16 Winograd included: before the fix its branch raised 'bias must be a float32 CPU tensor' for a
    bf16 bias the tile conv accepts. The results agree to two bf16 roundings."""
    from unet_fast.graph.ir import Conv

    weight, bias = lively(16, 24, 3, seed=21)
    x = torch.randn(2, 7, 9, 16, generator=torch.Generator().manual_seed(21)).bfloat16()
    wino = registry.get(f"cpu.conv2d.bf16_winograd.{cpu_isa.best().name}")
    packed = wino.pack(weight, torch.bfloat16)
    kernels = [k for k in registry.kernels("cpu", Conv, torch.bfloat16) if not registry.unavailable(k)]
    assert len(kernels) > 1
    for b in (bias.bfloat16(), bias.double()):
        got = wino.run([x], packed, b, padding=(1, 1), act="relu")
        want = cpu_winograd.conv3x3_winograd([x], packed, b.float(), padding=1, act="relu")
        assert torch.equal(got, want), b.dtype
        for k in kernels:
            other = k.run([x], k.pack(weight, torch.bfloat16), b, padding=(1, 1), act="relu")
            torch.testing.assert_close(other.float(), got.float(), rtol=2**-7, atol=1e-4, msg=k.name)
