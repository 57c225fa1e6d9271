"""The bf16 direct convolution on tiles (unet_fast.kernels.cpu_bf16.conv2d) against a float64 reference of
the same bf16-rounded inputs and weights: fp32 outputs within rel-L2 1e-5, bf16 outputs within one bf16
rounding per element; odd sizes, batch > 1, channel counts off the 16/32 blocks, strides 1/2, pads 0/1,
1x1 / 3x3 / 7x7 kernels, every epilogue, poisoned input and output slots. The portable tile emulator runs
everywhere; the native AMX backend runs where the CPU has it and skips with the reason elsewhere."""

from __future__ import annotations

import kernel_testutil as ku
import pytest
import torch
import torch.nn.functional as F
from bf16_testutil import assert_bf16_one_rounding, assert_f32_close, backend_params, lively

from unet_fast.kernels import cpu_bf16

NAN = float("nan")
# (N, H, W, Cin, Cout, K, stride, pad): every channel count of the brief (3, 17, 33, 64), sizes that are no
# multiple of the 16-pixel tile, rows narrower than a tile (pixels of a tile span rows), 7x7/s2 stems.
CASES = (
    (2, 9, 13, 64, 64, 3, 1, 1),
    (1, 17, 11, 33, 17, 3, 1, 1),
    (3, 7, 5, 17, 33, 3, 2, 1),
    (2, 13, 19, 3, 64, 3, 2, 0),
    (2, 6, 21, 33, 3, 1, 1, 0),
    (1, 11, 9, 64, 33, 1, 2, 0),
    (1, 21, 18, 3, 17, 7, 2, 3),
    (2, 5, 4, 17, 17, 3, 1, 0),
    # rows of >= 16 output pixels with full 32-channel chunks: interior A tiles load in place (strided)
    (2, 5, 37, 64, 40, 3, 1, 1),
    (1, 7, 40, 33, 17, 3, 2, 1),
)


def case_id(c: tuple) -> str:
    n, h, w, cin, cout, k, s, p = c
    return f"n{n}_{h}x{w}_c{cin}-{cout}_k{k}s{s}p{p}"




def abs_conv(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor | None,
             stride: int, pad: int) -> torch.Tensor:  # fmt: skip
    """sum |terms| per output element (float64): the scale of its accumulation error."""
    xd = x.to(torch.bfloat16).double().abs().permute(0, 3, 1, 2)
    y = F.conv2d(xd, w.to(torch.bfloat16).double().abs(), stride=stride, padding=pad).permute(0, 2, 3, 1)
    if bias is not None:
        y = y + bias.double().abs()
    if residual is not None:
        y = y + residual.double().abs()
    return y


def poisoned(
    shape: tuple[int, ...], dtype: torch.dtype, before: int = 3, after: int = 5
) -> tuple[torch.Tensor, torch.Tensor]:
    return ku.poisoned_slot(shape, dtype, before=before, after=after)  # type: ignore[arg-type]


def run_case(case: tuple, isa: str, act: str, residual_dtype: torch.dtype | None, seed: int) -> None:
    n, h, w, cin, cout, k, s, p = case
    g = torch.Generator().manual_seed(seed)
    # The input is itself a channel slot of a NaN-poisoned buffer: a read outside its channels shows.
    xbuf, x = poisoned((n, h, w, cin), torch.bfloat16, before=1, after=2)
    x.copy_(torch.randn(n, h, w, cin, generator=g))
    weight, bias = lively(cin, cout, k, seed)
    packed = cpu_bf16.pack_conv_weight(weight)
    hout, wout = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    shape = (n, hout, wout, cout)
    residual = None if residual_dtype is None else torch.randn(shape, generator=g).to(residual_dtype)
    ref = cpu_bf16.conv2d_reference(x, weight, bias, stride=s, padding=p, act=act, residual=residual)
    ref_lin = cpu_bf16.conv2d_reference(x, weight, bias, stride=s, padding=p, residual=residual)
    absref = abs_conv(x, weight, bias, residual, s, p)
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        buf, slot = poisoned(shape, dtype)
        got = cpu_bf16.conv2d(
            x, packed, bias, stride=s, padding=p, act=act, residual=residual, out=slot, isa=isa
        )
        assert got.data_ptr() == slot.data_ptr()
        outside = torch.cat([buf[..., :3], buf[..., 3 + cout :]], dim=-1)
        assert outside.isnan().all(), (
            f"{int((~outside.isnan()).sum())} elements outside the output slot written"
        )
        results[dtype] = got
    what = f"{case_id(case)} {act} residual={residual_dtype} isa={isa}"
    assert_f32_close(results[torch.float32], ref, what)
    # Activations are 1-Lipschitz (SiLU: |silu'| <= 1.1), so the accumulation bound carries over.
    assert_bf16_one_rounding(results[torch.bfloat16], ref, 1.1 * absref, cin * k * k + 2, what)
    # The bf16 store is one rounding of the very fp32 value the fp32 store writes (same tiles, same order).
    assert torch.equal(results[torch.bfloat16], results[torch.float32].bfloat16()), what
    assert ref_lin.shape == ref.shape
    assert xbuf[..., :1].isnan().all() and xbuf[..., 1 + cin :].isnan().all(), "the input buffer was changed"


@pytest.mark.parametrize("isa", backend_params())
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_conv_bf16_parity(case: tuple, isa: str) -> None:
    run_case(case, isa, "relu", None, seed=hash(case) % 1000)


@pytest.mark.parametrize("isa", backend_params())
@pytest.mark.parametrize(("act", "residual_dtype"),
                         [("none", None), ("silu", torch.bfloat16), ("leaky_relu", torch.float32), ("relu", torch.bfloat16)])  # fmt: skip
def test_conv_bf16_epilogues(act: str, residual_dtype: torch.dtype | None, isa: str) -> None:
    run_case((2, 10, 7, 33, 40, 3, 1, 1), isa, act, residual_dtype, seed=5)


@pytest.mark.parametrize("isa", backend_params())
def test_conv_bf16_without_bias(isa: str) -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 8, 9, 17, generator=g).bfloat16()
    weight, _ = lively(17, 20, 3, 2)
    got = cpu_bf16.conv2d(x, cpu_bf16.pack_conv_weight(weight), padding=1, out_dtype=torch.float32, isa=isa)
    assert_f32_close(got, cpu_bf16.conv2d_reference(x, weight, padding=1), "no bias")


def test_pack_layout_is_vnni2() -> None:
    """packed[tap, kc, nb, k, n, j] = w[16 nb + n, 32 kc + 2 k + j, ky, kx], zeros past Cin / Cout."""
    weight, _ = lively(37, 19, 3, 9)
    before = weight.clone()
    pw = cpu_bf16.pack_conv_weight(weight)
    assert torch.equal(weight, before), "packing changed the caller's weight"
    assert tuple(pw.packed.shape) == (9, 2, 2, 16, 16, 2) and pw.shape == weight.shape
    wb = weight.bfloat16()
    for tap, kc, nb, k, n, j in (
        (0, 0, 0, 0, 0, 0),
        (4, 1, 1, 1, 2, 1),
        (8, 0, 1, 15, 2, 0),
        (5, 1, 0, 2, 15, 0),
    ):
        co, ci, ky, kx = 16 * nb + n, 32 * kc + 2 * k + j, tap // 3, tap % 3
        assert pw.packed[tap, kc, nb, k, n, j] == wb[co, ci, ky, kx]
    assert (pw.packed[:, 1, :, 3:] == 0).all()  # ci = 32 + 2k + j >= 37 for k >= 3
    assert (pw.packed[:, :, 1, :, 3:] == 0).all()  # co = 16 + n >= 19 for n >= 3


def test_bad_arguments_are_clear_errors() -> None:
    x = torch.randn(1, 8, 8, 16).bfloat16()
    weight, bias = lively(16, 8, 3, 0)
    pw = cpu_bf16.pack_conv_weight(weight)
    cases = [
        (dict(x=x.float()), "dtype"),
        (dict(x=x[..., :15]), "15 channels"),
        (dict(weight=weight), "ConvWeightBF16"),
        (dict(stride=0), "stride"),
        (dict(padding=-1), "padding"),
        (dict(act="gelu"), "act"),
        (dict(out=torch.empty(1, 8, 8, 8)), "shape"),
        (dict(out=torch.empty(1, 6, 6, 8, dtype=torch.float16)), "dtype"),
        (dict(residual=torch.empty(1, 6, 6, 7)), "residual"),
        (dict(bias=bias[:3]), "bias"),
        (dict(isa="nope"), "unknown bf16 tile isa"),
        (dict(x=torch.randn(1, 2, 2, 16).bfloat16()), "smaller than"),
        (dict(out_dtype=torch.float16), "out_dtype"),
    ]
    for kwargs, match in cases:
        args = dict(x=x, weight=pw, bias=bias)
        args.update(kwargs)
        with pytest.raises(ValueError, match=match):
            cpu_bf16.conv2d(args.pop("x"), args.pop("weight"), args.pop("bias"), **args)
    with pytest.raises(ValueError, match="4-D"):
        cpu_bf16.pack_conv_weight(weight[0])
