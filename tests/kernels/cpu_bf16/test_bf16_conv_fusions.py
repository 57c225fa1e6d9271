"""The bf16 tile conv's fusions (issue 17), as the fp32 conv has them (kernels/spec.py conv2d): a virtual concat
of input views (channel slots of wider buffers, never materialised), crop / window and nearest / bilinear
resample on read, and the 2x2 max-pool output.

Truth: a float64 conv of the bf16-rounded weight and of the input exactly as the kernel stages it
(cpu_bf16.read_view_bf16: plain, window and nearest reads copy bf16 values; bilinear is blended in fp32
in the fp32 gather's order and rounded once to bf16, since a tile's A operand is bf16). Against it: fp32
outputs within rel-L2 1e-5, bf16 outputs within one bf16 rounding per element (plus the fp32 accumulation
bound), the bf16 output equal to the rounding of the kernel's own fp32 output, and the pool output exactly
the max of the stored outputs. Bilinear also gets an end-to-end budget against the float64 conv of the
exact (float64) bilinear of the bf16 input: one bf16 rounding of the staged input plus one of the output
(what eager bf16 interpolate + conv has too); that is the honest accuracy of a bf16 upsample-on-read, and
the fp32 blend itself agrees with the fp32 model's F.interpolate to a few fp32 ulps (tested).

Odd sizes, batch > 1, channel counts off the 16/32 blocks (skip 17 + up 33), chunks that straddle two
sources, three sources, NaN-poisoned input buffers and output slots. The portable tile emulator runs
everywhere; the native AMX backend runs where the CPU has it and skips with the reason elsewhere.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from bf16_testutil import (
    NAN,
    U_BF16,
    U_F32,
    assert_bf16_one_rounding,
    assert_f32_close,
    assert_only_slot_written,
    backend_params,
    lively,
    poisoned_out,
    slot_of_poisoned,
)

from unet_fast.kernels import cpu_bf16
from unet_fast.kernels.spec import InputView, Resample, read_view


def abs_conv(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, stride: int, pad: int) -> torch.Tensor:
    """sum |terms| per output element (float64) of the conv of the staged input x: its accumulation scale."""
    xd = x.double().abs().permute(0, 3, 1, 2)
    y = F.conv2d(xd, w.bfloat16().double().abs(), stride=stride, padding=pad).permute(0, 2, 3, 1)
    return y + bias.double().abs()


def run(views: list, cout: int, k: int, stride: int, pad: int, isa: str, seed: int, *, pool: bool = False,
        act: str = "relu") -> dict[torch.dtype, tuple[torch.Tensor, torch.Tensor | None]]:  # fmt: skip
    """Run the conv on `views` into poisoned fp32 and bf16 slots (and pool slots), check both against the
    float64 reference of the staged input; returns {dtype: (out, pool_out)}."""
    cin = sum(v.channels for v in views)
    weight, bias = lively(cin, cout, k, seed)
    packed = cpu_bf16.pack_conv_weight(weight)
    staged = torch.cat([cpu_bf16.read_view_bf16(v) for v in views], dim=3)
    n, h, w, _ = staged.shape
    hout, wout = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    shape = (n, hout, wout, cout)
    ref = cpu_bf16.conv2d_reference(views, weight, bias, stride=stride, padding=pad, act=act)
    assert torch.equal(ref, cpu_bf16.conv2d_reference(staged, weight, bias, stride=stride, padding=pad, act=act))
    before = [v.tensor.clone() for v in views]
    results = {}
    what = f"{[tuple(v.tensor.shape) for v in views]} -> {shape} k{k}s{stride}p{pad} isa={isa}"
    for dtype in (torch.float32, torch.bfloat16):
        buf, slot = poisoned_out(shape, dtype)
        pbuf, pslot = poisoned_out((n, hout // 2, wout // 2, cout), dtype) if pool else (None, None)
        got = cpu_bf16.conv2d(views, packed, bias, stride=stride, padding=pad, act=act, out=slot, pool_out=pslot,
                              isa=isa)  # fmt: skip
        assert got.data_ptr() == slot.data_ptr()
        assert_only_slot_written(buf, cout, f"{what} {dtype} out")
        if pool:
            assert_only_slot_written(pbuf, cout, f"{what} {dtype} pool_out")
            # exactly the 2x2 max of the stored outputs, floored at odd sizes
            expect = F.max_pool2d(slot.float().permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
            assert torch.equal(pslot.float(), expect), f"{what} {dtype}: pool_out is not the max of out"
        results[dtype] = (got, pslot)
    for v, b in zip(views, before, strict=True):
        assert torch.equal(v.tensor, b), "an input view was changed"
    assert_f32_close(results[torch.float32][0], ref, what)
    assert_bf16_one_rounding(results[torch.bfloat16][0], ref, 1.1 * abs_conv(staged, weight, bias, stride, pad),
                             cin * k * k + 1, what)  # fmt: skip
    assert torch.equal(results[torch.bfloat16][0], results[torch.float32][0].bfloat16()), what
    return results


# ---------------------------------------------------------------------------------------------------
# Virtual concat
# ---------------------------------------------------------------------------------------------------

# (N, H, W, channels per source, Cout, K, stride, pad)
CONCAT_CASES = (
    (2, 9, 13, (17, 33), 40, 3, 1, 1),  # the brief's skip 17 + up 33: chunk 0 straddles at 17
    (1, 6, 37, (32, 32), 33, 3, 1, 1),  # a U-Net concat: chunks align to the sources, interior rows in place
    (2, 7, 19, (48, 16), 17, 3, 1, 0),  # chunk 1 straddles at 48, the rest in place
    (3, 5, 11, (8, 24, 9), 16, 1, 1, 0),  # three sources, 1x1
    (1, 11, 20, (33, 40), 20, 3, 2, 1),  # stride 2
)


def concat_id(c: tuple) -> str:
    n, h, w, cs, cout, k, s, p = c
    return f"n{n}_{h}x{w}_c{'+'.join(map(str, cs))}-{cout}_k{k}s{s}p{p}"


@pytest.mark.parametrize("isa", backend_params())
@pytest.mark.parametrize("case", CONCAT_CASES, ids=concat_id)
def test_virtual_concat(case: tuple, isa: str) -> None:
    n, h, w, chans, cout, k, s, p = case
    g = torch.Generator().manual_seed(sum(chans) + h)
    views = [InputView(slot_of_poisoned(n, h, w, c, g, before=1 + i)[1]) for i, c in enumerate(chans)]
    run(views, cout, k, s, p, isa, seed=h * w)


@pytest.mark.parametrize("isa", backend_params())
def test_plain_tensors_and_a_single_view_list(isa: str) -> None:
    """A list of plain tensors is a virtual concat too; one view in a list is the same as the bare tensor."""
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(2, 5, 9, 20, generator=g).bfloat16(), torch.randn(2, 5, 9, 13, generator=g).bfloat16()
    weight, bias = lively(33, 18, 3, 4)
    pw = cpu_bf16.pack_conv_weight(weight)
    got = cpu_bf16.conv2d([a, b], pw, bias, padding=1, isa=isa)
    assert torch.equal(got, cpu_bf16.conv2d(torch.cat([a, b], dim=3), pw, bias, padding=1, isa=isa))
    one = cpu_bf16.conv2d([InputView(a)], cpu_bf16.pack_conv_weight(weight[:, :20]), bias, padding=1, isa=isa)
    assert torch.equal(one, cpu_bf16.conv2d(a, cpu_bf16.pack_conv_weight(weight[:, :20]), bias, padding=1, isa=isa))


# ---------------------------------------------------------------------------------------------------
# Crop / window and resample on read
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("isa", backend_params())
def test_center_crop_of_the_skip(isa: str) -> None:
    """Ronneberger's valid U-Net: the skip (larger) is centre-cropped to the upsampled tensor's size; 64
    channels and rows of >= 16 pixels, so interior tiles load in place at the crop's pointer offset."""
    g = torch.Generator().manual_seed(11)
    skip = slot_of_poisoned(2, 29, 44, 64, g)[1]
    up = slot_of_poisoned(2, 21, 36, 33, g)[1]
    views = [InputView(skip, offset=(4, 4), size=(21, 36)), InputView(up)]
    run(views, 24, 3, 1, 0, isa, seed=11)


@pytest.mark.parametrize("isa", backend_params())
def test_window_past_the_edge_reads_zeros(isa: str) -> None:
    """milesial's F.pad: a negative offset / a window past the source's edge reads zeros."""
    g = torch.Generator().manual_seed(12)
    skip = slot_of_poisoned(2, 10, 18, 32, g)[1]
    up = slot_of_poisoned(2, 9, 17, 17, g)[1]
    views = [InputView(skip), InputView(up, offset=(0, -1), size=(10, 18))]
    run(views, 20, 3, 1, 1, isa, seed=12)
    run([InputView(skip, offset=(-1, -2), size=(12, 21))], 17, 3, 1, 1, isa, seed=13)


@pytest.mark.parametrize("isa", backend_params())
@pytest.mark.parametrize("size", [(14, 22), (19, 23)], ids=["2x", "odd"])
def test_nearest_upsample_on_read(size: tuple[int, int], isa: str) -> None:
    g = torch.Generator().manual_seed(size[0])
    low = slot_of_poisoned(2, 7, 11, 33, g)[1]
    skip = slot_of_poisoned(2, *size, 17, g)[1]
    views = [InputView(skip), InputView(low, Resample("nearest", size))]
    run(views, 19, 3, 1, 1, isa, seed=size[1])


BILINEAR = [
    ((14, 22), False, (0, 0), None),
    ((14, 22), True, (0, 0), None),
    ((15, 21), False, (0, 0), None),  # not an exact 2x
    ((16, 24), True, (1, 2), (13, 19)),  # resample, then a crop window
]


@pytest.mark.parametrize("isa", backend_params())
@pytest.mark.parametrize(("size", "align_corners", "offset", "window"), BILINEAR,
                         ids=["2x", "2x_ac", "odd", "2x_ac_crop"])  # fmt: skip
def test_bilinear_upsample_on_read(size: tuple[int, int], align_corners: bool, offset: tuple[int, int],
                                   window: tuple[int, int] | None, isa: str) -> None:  # fmt: skip
    g = torch.Generator().manual_seed(21 + size[0])
    low = slot_of_poisoned(2, 7, 11, 40, g)[1]
    up = InputView(low, Resample("bilinear", size, align_corners), offset, window)
    skip = slot_of_poisoned(2, *up.out_size, 17, g)[1]
    views = [InputView(skip), up]
    results = run(views, 24, 3, 1, 1, isa, seed=size[1])

    # The end-to-end budget against the exact bilinear (float64 of the bf16 input): the staged input is one
    # bf16 rounding (plus the fp32 blend, <= 4 fp32 roundings of the blend of |x|) away from it, the output
    # one more bf16 rounding: |y - ref| <= U |ref| + (1 + U) ((terms 2^-24 + U + 4 2^-24) sum|terms|).
    weight, bias = lively(57, 24, 3, size[1])
    exact = torch.cat([read_view(InputView(skip.double())),
                       read_view(InputView(low.double(), up.resample, offset, window))], dim=3)  # fmt: skip
    abs_exact = torch.cat([read_view(InputView(skip.double().abs())),
                           read_view(InputView(low.double().abs(), up.resample, offset, window))], dim=3)  # fmt: skip
    xd = exact.permute(0, 3, 1, 2)
    ref = F.conv2d(xd, weight.bfloat16().double(), bias.double(), padding=1).relu().permute(0, 2, 3, 1)
    absref = abs_conv(abs_exact, weight, bias, 1, 1)
    tol = U_BF16 * ref.abs() + (1 + U_BF16) * ((57 * 9 + 1) * U_F32 + U_BF16 + 4 * U_F32) * absref
    err = (results[torch.bfloat16][0].double() - ref).abs()
    assert (err <= tol).all(), f"bilinear budget exceeded at {int((err > tol).sum())} elements"


@pytest.mark.parametrize("align_corners", [False, True])
def test_fp32_bilinear_blend_matches_f_interpolate(align_corners: bool) -> None:
    """The fp32 blend the kernel stages (before its bf16 rounding) is the fp32 model's F.interpolate up to a
    few fp32 roundings: the tile conv upsamples what the fp32 model upsamples."""
    x = torch.randn(2, 7, 11, 5, generator=torch.Generator().manual_seed(3)).bfloat16()
    for size in ((14, 22), (15, 21), (9, 30)):
        r = Resample("bilinear", size, align_corners)
        taps_y = cpu_bf16._bilinear_taps(size[0], 7, size[0], 0, align_corners)
        taps_x = cpu_bf16._bilinear_taps(size[1], 11, size[1], 0, align_corners)
        xf = x.float()
        _, y0, y1, wy0, wy1 = taps_y
        _, x0, x1, wx0, wx1 = taps_x
        # along W (each product and the sum rounded in fp32), then along H
        top = wx0[:, None] * xf[:, y0][:, :, x0] + wx1[:, None] * xf[:, y0][:, :, x1]
        bottom = wx0[:, None] * xf[:, y1][:, :, x0] + wx1[:, None] * xf[:, y1][:, :, x1]
        fp32 = wy0[:, None, None] * top + wy1[:, None, None] * bottom
        torch_fp32 = F.interpolate(xf.permute(0, 3, 1, 2), size=size, mode="bilinear",
                                   align_corners=align_corners).permute(0, 2, 3, 1)  # fmt: skip
        torch.testing.assert_close(fp32, torch_fp32, rtol=4 * U_F32, atol=4 * U_F32 * xf.abs().max().item())
        assert torch.equal(cpu_bf16.read_view_bf16(InputView(x, r)), fp32.bfloat16())


# ---------------------------------------------------------------------------------------------------
# 2x2 max-pool output
# ---------------------------------------------------------------------------------------------------

# (N, H, W, Cin, Cout, K, stride, pad): odd Hout / Wout (floored pool), Wout narrower and wider than a 16-pixel
# tile (in-place interior rows, several column blocks), Cout off the 32 blocks.
POOL_CASES = (
    (2, 9, 13, 17, 40, 3, 1, 1),
    (1, 10, 37, 64, 33, 3, 1, 1),
    (3, 7, 6, 33, 17, 3, 1, 0),
    (2, 12, 35, 32, 16, 1, 1, 0),
    (1, 13, 40, 3, 20, 3, 2, 1),
)


def pool_id(c: tuple) -> str:
    n, h, w, cin, cout, k, s, p = c
    return f"n{n}_{h}x{w}_c{cin}-{cout}_k{k}s{s}p{p}"


@pytest.mark.parametrize("isa", backend_params())
@pytest.mark.parametrize("case", POOL_CASES, ids=pool_id)
def test_pool_output(case: tuple, isa: str) -> None:
    n, h, w, cin, cout, k, s, p = case
    g = torch.Generator().manual_seed(h + w)
    x = slot_of_poisoned(n, h, w, cin, g)[1]
    run([InputView(x)], cout, k, s, p, isa, seed=cin + cout, pool=True)


@pytest.mark.parametrize("isa", backend_params())
def test_pool_with_virtual_concat_and_residual(isa: str) -> None:
    """Every fusion at once: a decoder-like virtual concat with a crop, a residual, leaky ReLU and the pool;
    and a pool_out in the other dtype than out (bf16 out, fp32 pool: the max of the stored bf16 values)."""
    g = torch.Generator().manual_seed(8)
    skip = slot_of_poisoned(2, 13, 21, 17, g)[1]
    low = slot_of_poisoned(2, 6, 10, 33, g)[1]
    views = [InputView(skip, offset=(1, 1), size=(11, 19)), InputView(low, Resample("nearest", (11, 19)))]
    weight, bias = lively(50, 24, 3, 8)
    res = torch.randn(2, 11, 19, 24, generator=g).bfloat16()
    ref = cpu_bf16.conv2d_reference(views, weight, bias, padding=1, act="leaky_relu", residual=res)
    out = torch.full((2, 11, 19, 24), NAN, dtype=torch.bfloat16)
    pool = torch.full((2, 5, 9, 24), NAN, dtype=torch.float32)
    cpu_bf16.conv2d(views, cpu_bf16.pack_conv_weight(weight), bias, padding=1, act="leaky_relu", residual=res,
                    out=out, pool_out=pool, isa=isa)  # fmt: skip
    staged = torch.cat([cpu_bf16.read_view_bf16(v) for v in views], dim=3)
    absref = abs_conv(staged, weight, bias, 1, 1) + res.double().abs()
    assert_bf16_one_rounding(out, ref, absref, 50 * 9 + 2, "all fusions")
    assert torch.equal(pool, F.max_pool2d(out.float().permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1))


# ---------------------------------------------------------------------------------------------------
# Argument errors
# ---------------------------------------------------------------------------------------------------


def test_bad_arguments_are_clear_errors() -> None:
    a = torch.randn(1, 8, 8, 16).bfloat16()
    b = torch.randn(1, 8, 8, 8).bfloat16()
    weight, bias = lively(24, 8, 3, 0)
    pw = cpu_bf16.pack_conv_weight(weight)
    cases = [
        (dict(x=[a, torch.randn(1, 8, 9, 8).bfloat16()]), "reads as"),  # spatial sizes differ
        (dict(x=[a, InputView(torch.randn(1, 4, 4, 8).bfloat16(), Resample("nearest", (8, 9)))]), "reads as"),
        (dict(x=[a, torch.randn(2, 8, 8, 8).bfloat16()]), "batch"),
        (dict(x=[a, b[..., :7]]), "16 \\+ 7 = 23 channels"),
        (dict(x=[a, b.float()]), "dtype"),
        (dict(x=[]), "at least one input"),
        (dict(x=[a] + [b[..., :1]] * 8), "at most 8"),
        (dict(x=[a, InputView(b, Resample("bicubic", (8, 8)))]), "resample mode"),
        (dict(pool_out=torch.empty(1, 3, 3, 8, dtype=torch.bfloat16)), "pool_out has shape"),
        (dict(pool_out=torch.empty(1, 4, 4, 8, dtype=torch.float16)), "pool_out has dtype"),
        (dict(x=[a[:, :1], b[:, :1]], padding=1), "2x2 pool needs"),
    ]
    for kwargs, match in cases:
        args = dict(x=[a, b], weight=pw, bias=bias, padding=1, pool_out=torch.empty(1, 4, 4, 8, dtype=torch.bfloat16))
        args.update(kwargs)
        with pytest.raises(ValueError, match=match):
            cpu_bf16.conv2d(args.pop("x"), args.pop("weight"), args.pop("bias"), **args)
    out = torch.empty(1, 8, 8, 8, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="overlaps"):
        cpu_bf16.conv2d([a, b], pw, bias, padding=1, out=out, pool_out=out[:, :4, :4])
    with pytest.raises(ValueError, match="bf16"):
        cpu_bf16.read_view_bf16(InputView(a.float()))
