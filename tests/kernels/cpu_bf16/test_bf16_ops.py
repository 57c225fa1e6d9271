"""The standalone bf16 ops (kernels/cpu_bf16_ops.py, csrc/cpu/bf16/) against float64 references computed from
the same bf16 values:
- max-pool and every copy (plain read, nearest, crop, zero pad) exactly equal;
- bilinear within one bf16 rounding of the float64 value (plus the fp32 coordinate / blend error, bounded
  below), and bit-equal to the bf16 rounding of the fp32 gather on the same values;
- head scores (fp32) within rel-L2 1e-5 of float64, bf16 scores the rounding of the fp32 ones; argmax equal to
  the float64 argmax at every pixel whose top-two float64 logits are further apart than twice the worst-case
  fp32 accumulation error of a logit (the tie margin, `_tie_margin`);
odd sizes, batch > 1, channels off the 16/32 blocks, channel-slot inputs and NaN-poisoned output slots,
argument errors."""

from __future__ import annotations

import kernel_testutil as ku
import pytest
import torch
from bf16_testutil import U_BF16, U_F32, assert_f32_close, backend_params

from unet_fast.kernels import cpu, cpu_bf16, cpu_bf16_ops, registry
from unet_fast.kernels.spec import InputView, Resample

NAN = float("nan")

pytestmark = pytest.mark.skipif(
    not cpu_bf16.available_tile_backends(), reason="unet_fast._C without bf16 ops"
)


def _slot(
    n: int, h: int, w: int, c: int, *, lo: int = 3, hi: int = 2, fill: float = NAN, g=None
) -> torch.Tensor:
    """A channel slot [N, H, W, C] of a wider bf16 buffer whose other channels hold `fill`; random values
    inside the slot when `g` is given, else `fill` too."""
    buf, _ = ku.poisoned_slot((n, h, w, c), torch.bfloat16, before=lo, after=hi)
    if fill == fill:  # a fill other than the NaN poison
        buf.fill_(fill)
    if g is not None:
        buf[..., lo : lo + c] = torch.randn(n, h, w, c, generator=g).bfloat16()
    return buf[..., lo : lo + c]


def _untouched(slot: torch.Tensor, lo: int = 3) -> bool:
    """The channels of slot's buffer outside the slot are still NaN."""
    base = slot._base if slot._base is not None else slot
    try:
        ku.assert_outside_untouched(base, lo, lo + slot.shape[3])
    except AssertionError:
        return False
    return True


# ---------------------------------------------------------------------------------------------------
# max-pool
# ---------------------------------------------------------------------------------------------------

POOL_CASES = ((2, 7, 9, 19), (1, 8, 16, 33), (3, 5, 4, 64), (1, 2, 2, 1), (2, 11, 13, 40))


@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: "n{}_{}x{}_c{}".format(*c))
def test_maxpool2x2_bf16_exact(case: tuple) -> None:
    n, h, w, c = case
    g = torch.Generator().manual_seed(h * 31 + c)
    x = _slot(n, h, w, c, g=g)  # an input slot: NaN around it must not be read
    before = x.clone()
    out = _slot(n, h // 2, w // 2, c)
    assert cpu_bf16_ops.maxpool2x2(x, out) is out
    assert torch.equal(x, before) and _untouched(out)
    assert torch.equal(out.double(), cpu_bf16_ops.maxpool2x2_reference(x))
    # the cpu backend's bf16 Pool kernel (what the engine runs) is the same op; a fresh output too
    assert torch.equal(registry.get("cpu.maxpool2x2.bf16").run(x), out)
    with pytest.raises(ValueError, match="float32"):
        cpu.maxpool2x2(x)  # the fp32 launcher refuses bf16 instead of reading it as fp32


def test_maxpool2x2_bf16_propagates_nan() -> None:
    x = torch.randn(2, 6, 7, 20).bfloat16()
    x[0, 1, 2, 3] = NAN
    x[1, 4, 5, 19] = NAN
    got = cpu_bf16_ops.maxpool2x2(x)
    ref = cpu_bf16_ops.maxpool2x2_reference(x)
    assert torch.equal(got.isnan(), ref.isnan()) and int(got.isnan().sum()) == 2
    assert torch.equal(got.double().nan_to_num(7.0), ref.nan_to_num(7.0))


def test_maxpool2x2_bf16_errors() -> None:
    x = torch.randn(1, 4, 4, 3).bfloat16()
    with pytest.raises(TypeError, match="bfloat16"):
        cpu_bf16_ops.maxpool2x2(x.float())
    with pytest.raises(TypeError, match="out has dtype"):
        cpu_bf16_ops.maxpool2x2(x, torch.empty(1, 2, 2, 3))
    with pytest.raises(ValueError, match="shape"):
        cpu_bf16_ops.maxpool2x2(x, torch.empty(1, 2, 3, 3, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="at least 2x2"):
        cpu_bf16_ops.maxpool2x2(x[:, :1])
    with pytest.raises(ValueError, match="channel stride"):
        cpu_bf16_ops.maxpool2x2(x.permute(0, 3, 1, 2).contiguous().permute(0, 1, 3, 2))
    with pytest.raises(ValueError, match=r"fp16|float16"):
        cpu.maxpool2x2(x.half())  # the fp32 op still refuses other dtypes


# ---------------------------------------------------------------------------------------------------
# upsample / crop / concat
# ---------------------------------------------------------------------------------------------------

# (source H, W, resample or None, window offset, window size or None)
VIEWS = {
    "plain": (7, 9, None, (0, 0), None),
    "crop": (11, 13, None, (2, 1), (7, 9)),
    "pad": (5, 8, None, (-1, -2), (7, 9)),  # zero rows / columns on every side
    "nearest2x": (4, 5, Resample("nearest", (8, 10)), (1, 1), (7, 9)),
    "nearest_odd": (5, 6, Resample("nearest", (7, 9)), (0, 0), None),
    "bilinear2x": (4, 5, Resample("bilinear", (8, 10)), (0, 0), (7, 9)),
    "bilinear_ac": (4, 5, Resample("bilinear", (7, 9), align_corners=True), (0, 0), None),
    "bilinear_odd": (3, 7, Resample("bilinear", (7, 9)), (0, 0), None),
}


def _view(name: str, n: int, c: int, g: torch.Generator) -> InputView:
    h, w, r, off, size = VIEWS[name]
    return InputView(_slot(n, h, w, c, g=g), r, off, size)


def _bilinear_ok(got: torch.Tensor, ref: torch.Tensor, src: torch.Tensor) -> None:
    """One bf16 rounding of the float64 value, plus the fp32 error of the coordinates and the blend: PyTorch's
    source coordinate scale * (dst + 0.5) - 0.5 in fp32 errs by a few ulps of the source size, the weights by
    as much, the blend by a few ulps of the largest neighbour: (16 + 8 max(H, W)) 2^-24 max|src| bounds both."""
    slack = (16 + 8 * max(src.shape[1], src.shape[2])) * U_F32 * src.double().abs().max()
    tol = U_BF16 * ref.abs() + (1 + U_BF16) * slack
    excess = (got.double() - ref).abs() - tol
    assert not got.isnan().any() and int((excess > 0).sum()) == 0, float(excess.max())


@pytest.mark.parametrize("name", list(VIEWS))
@pytest.mark.parametrize("n,c", [(2, 19), (1, 64), (3, 1)])
def test_gather_bf16_against_float64(name: str, n: int, c: int) -> None:
    g = torch.Generator().manual_seed(len(name) * 13 + c)
    view = _view(name, n, c, g)
    before = view.tensor.clone()
    h, w = view.out_size
    out = _slot(n, h, w, c)
    assert cpu_bf16_ops.upsample_concat([view], out) is out
    assert torch.equal(view.tensor, before) and _untouched(out)
    ref = cpu_bf16_ops.upsample_concat_reference([view])
    if view.resample is None or view.resample.mode == "nearest":
        assert torch.equal(out.double(), ref), "a copy must be exact"
    else:
        _bilinear_ok(out, ref, view.tensor)
        # one rounding of the fp32 gather's own arithmetic (the baseline build: the same expression, no FMA)
        v32 = InputView(view.tensor.float(), view.resample, view.offset, view.size)
        assert torch.equal(out, cpu.upsample_concat([v32], isa="portable").bfloat16())


def test_upsample_concat_bf16_several_views_into_a_slot() -> None:
    g = torch.Generator().manual_seed(5)
    views = [
        _view("plain", 2, 17, g),
        _view("bilinear2x", 2, 8, g),
        _view("pad", 2, 33, g),
        _view("crop", 2, 3, g),
    ]
    out = _slot(2, 7, 9, 17 + 8 + 33 + 3, lo=5, hi=1)
    registry.get("cpu.upsample_concat.bf16").run(views, out)  # the cpu backend's bf16 Concat kernel: the bf16 gather
    assert _untouched(out, lo=5)
    ref = cpu_bf16_ops.upsample_concat_reference(views)
    exact = torch.cat([torch.ones(17), torch.zeros(8), torch.ones(33 + 3)]).bool()
    assert torch.equal(out[..., exact].double(), ref[..., exact])
    _bilinear_ok(out[..., 17:25], ref[..., 17:25], views[1].tensor)


def test_upsample_concat_bf16_errors() -> None:
    x = torch.randn(1, 4, 4, 3).bfloat16()
    with pytest.raises(TypeError, match="sequence"):
        cpu_bf16_ops.upsample_concat(x)
    with pytest.raises(TypeError, match=r"inputs\[1\] has dtype"):
        cpu_bf16_ops.upsample_concat([x, x.float()])
    with pytest.raises(TypeError, match="out has dtype"):
        cpu_bf16_ops.upsample_concat([x], torch.empty(1, 4, 4, 3))
    with pytest.raises(ValueError, match="views must agree"):
        cpu_bf16_ops.upsample_concat([x, x[:, :3]])
    with pytest.raises(ValueError, match="batch"):
        cpu_bf16_ops.upsample_concat([x, torch.cat([x, x])])
    with pytest.raises(ValueError, match="shape"):
        cpu_bf16_ops.upsample_concat([x, x], torch.empty(1, 4, 4, 5, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="resample mode"):
        cpu_bf16_ops.upsample_concat([InputView(x, Resample("bicubic", (8, 8)))])  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------
# head
# ---------------------------------------------------------------------------------------------------

# (N, H, W, C, K): chunks of >= 256 pixels: W = 45 -> 6 rows (13 = 2 x 6 + 1), W = 300 -> 1 row
HEAD_CASES = ((2, 5, 7, 19, 3), (1, 13, 45, 64, 2), (3, 4, 3, 33, 1), (1, 3, 300, 17, 21), (2, 6, 11, 8, 40))
SCORE_OPS = ("logits", "softmax", "sigmoid")


def _head_operands(case: tuple, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n, h, w, c, k = case
    g = torch.Generator().manual_seed(seed)
    x = _slot(n, h, w, c, g=g)
    weight = torch.randn(k, c, 1, 1, generator=g) * (2.0 / c) ** 0.5
    bias = 0.1 * torch.randn(k, generator=g)
    return x, weight, bias


def _tie_margin(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Per pixel, twice the worst-case fp32 accumulation error of a logit: (C + 1) 2^-24 sum_c |x_c w_kc| + |b_k|
    (Higham's gamma_n over C products and the bias), maximised over the classes. Two logits further apart
    than this in float64 keep their order in fp32."""
    absref = (
        x.double().abs() @ weight.reshape(weight.shape[0], -1).bfloat16().double().abs().t()
        + bias.double().abs()
    )
    return 2 * (x.shape[3] + 1) * U_F32 * absref.amax(dim=3)


def _check_argmax(got: torch.Tensor, x, weight, bias, what: str) -> None:
    logits = cpu_bf16_ops.head_reference(x, weight, bias, "logits")
    top2 = logits.topk(2, dim=3).values if logits.shape[3] > 1 else None
    ref = logits.argmax(dim=3)
    clear = (
        torch.ones_like(ref, dtype=torch.bool)
        if top2 is None
        else (top2[..., 0] - top2[..., 1]) > _tie_margin(x, weight, bias)
    )
    assert got.dtype in cpu_bf16_ops.INDEX_DTYPES and got.shape == ref.shape
    assert int((got.long() < 0).sum()) == 0, f"{what}: unwritten pixels"
    bad = int((got.long() != ref)[clear].sum())
    assert bad == 0, f"{what}: {bad} of {int(clear.sum())} pixels outside the tie margin disagree"
    assert clear.float().mean() > 0.99, f"{what}: the tie margin excludes too many pixels to test anything"


@pytest.mark.parametrize("isa", backend_params())
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "two_pass"])
@pytest.mark.parametrize("case", HEAD_CASES, ids=lambda c: "n{}_{}x{}_c{}_k{}".format(*c))
def test_head_bf16_against_float64(case: tuple, fused: bool, isa: str) -> None:
    n, h, w, c, k = case
    x, weight, bias = _head_operands(case, seed=c * 7 + k)
    before = (x.clone(), weight.clone(), bias.clone())
    packed = cpu_bf16_ops.pack_head_weight(weight)
    assert packed.shape == (k, c)
    for op in SCORE_OPS:
        ref = cpu_bf16_ops.head_reference(x, weight, bias, op)
        got = {}
        for dtype in cpu_bf16_ops.HEAD_OUT_DTYPES:
            buf = torch.full((n, h, w, k + 4), NAN, dtype=dtype)
            slot = buf[..., 1 : 1 + k]
            assert cpu_bf16_ops.head(x, packed, bias, op, slot, fused=fused, isa=isa) is slot
            assert buf[..., :1].isnan().all() and buf[..., 1 + k :].isnan().all(), "wrote outside the slot"
            got[dtype] = slot
        what = f"{case} {op} fused={fused} isa={isa}"
        assert_f32_close(got[torch.float32], ref, what)
        assert torch.equal(got[torch.bfloat16], got[torch.float32].bfloat16()), what
    for dtype in cpu_bf16_ops.INDEX_DTYPES:
        if dtype == torch.uint8 and k > 256:
            continue
        out = torch.full((n, h, w), -1 if dtype != torch.uint8 else 255, dtype=dtype)
        cpu_bf16_ops.head(x, packed, bias, "argmax", out, fused=fused, isa=isa)
        if dtype == torch.uint8:
            assert int((out == 255).sum()) == 0, "unwritten pixels"
            out = out.long()
        _check_argmax(out, x, weight, bias, f"{case} argmax {dtype} fused={fused}")
    assert all(torch.equal(a, b) for a, b in zip(before, (x, weight, bias), strict=True))


def test_head_bf16_default_outputs_and_the_cpu_launcher() -> None:
    x, weight, bias = _head_operands((2, 5, 9, 24, 4), seed=3)
    packed = cpu_bf16_ops.pack_head_weight(weight)
    probs = cpu_bf16_ops.head(x, packed, bias)
    assert probs.dtype == torch.float32 and probs.shape == (2, 5, 9, 4)
    assert cpu_bf16_ops.head(x, packed, bias, out_dtype=torch.bfloat16).dtype == torch.bfloat16
    classes = cpu_bf16_ops.head(x, packed, bias, "argmax")
    assert classes.dtype == torch.int64 and classes.shape == (2, 5, 9)
    # no bias
    assert_f32_close(cpu_bf16_ops.head(x, packed, None, "logits"), cpu_bf16_ops.head_reference(x, weight, None, "logits"),
                     "no bias")  # fmt: skip
    # the result does not depend on the thread count (fixed row chunks)
    before = torch.get_num_threads()
    try:
        for threads in (1, 3):
            torch.set_num_threads(threads)
            assert torch.equal(cpu_bf16_ops.head(x, packed, bias), probs)
            assert torch.equal(cpu_bf16_ops.maxpool2x2(x), cpu_bf16_ops.maxpool2x2(x.contiguous()))
    finally:
        torch.set_num_threads(before)
    # the engine's path: the registry's bf16 head kernels (one per tile backend) run the fused bf16 head
    from unet_fast.graph.ir import Head
    from unet_fast.kernels import registry

    heads = [k for k in registry.kernels("cpu", Head, torch.bfloat16) if k.family == "bf16" and not registry.unavailable(k)]
    assert heads and all("bf16 head" in k.algorithm and k.scores_dtype(torch.bfloat16) == torch.float32 for k in heads)
    for k in heads:
        tiles = k.pack(weight, torch.bfloat16)
        assert isinstance(tiles, cpu_bf16_ops.HeadWeightBF16)
        same = k.isa == cpu_bf16.choose_backend().name  # probs / classes came from the auto backend
        got = k.run(x, tiles, bias, "softmax", torch.empty(2, 5, 9, 4))
        assert torch.equal(got, probs) if same else bool((got - probs).abs().max() < 1e-2), k.name
        if same:
            assert torch.equal(k.run(x, tiles, bias, "argmax"), classes), k.name


def test_head_bf16_reads_views() -> None:
    """A cropped nearest view against float64 directly; a bilinear view (gathered to bf16 first: one rounding
    of the resampled input) equal to the head of that gathered tensor."""
    g = torch.Generator().manual_seed(11)
    src = _slot(2, 4, 6, 20, g=g)
    weight = torch.randn(3, 20) * 0.3
    bias = torch.randn(3) * 0.1
    packed = cpu_bf16_ops.pack_head_weight(weight)
    near = InputView(src, Resample("nearest", (8, 12)), (1, -1), (6, 11))
    got = cpu_bf16_ops.head(near, packed, bias, "softmax")
    assert_f32_close(got, cpu_bf16_ops.head_reference(near, weight, bias, "softmax"), "nearest view")
    bil = InputView(src, Resample("bilinear", (7, 11)), (0, 0), None)
    gathered = cpu_bf16_ops.upsample_concat([bil])
    for op in ("sigmoid", "argmax"):
        assert torch.equal(
            cpu_bf16_ops.head(bil, packed, bias, op), cpu_bf16_ops.head(gathered, packed, bias, op)
        )


def test_head_bf16_errors() -> None:
    x = torch.randn(1, 4, 4, 6).bfloat16()
    packed = cpu_bf16_ops.pack_head_weight(torch.randn(3, 6))
    with pytest.raises(TypeError, match="float tensor"):
        cpu_bf16_ops.pack_head_weight(torch.ones(3, 6, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"\[K, C\]"):
        cpu_bf16_ops.pack_head_weight(torch.randn(3, 6, 3, 3))
    with pytest.raises(TypeError, match="HeadWeightBF16"):
        cpu_bf16_ops.head(x, torch.randn(3, 6))
    with pytest.raises(TypeError, match="bfloat16"):
        cpu_bf16_ops.head(x.float(), packed)
    with pytest.raises(ValueError, match="unknown head op"):
        cpu_bf16_ops.head(x, packed, op="tanh")
    with pytest.raises(ValueError, match="expects 6"):
        cpu_bf16_ops.head(x[..., :5], packed)
    with pytest.raises(ValueError, match="shape"):
        cpu_bf16_ops.head(x, packed, out=torch.empty(1, 4, 4, 2))
    with pytest.raises(TypeError, match="writes one of"):
        cpu_bf16_ops.head(x, packed, op="softmax", out=torch.empty(1, 4, 4, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="writes one of"):
        cpu_bf16_ops.head(x, packed, op="argmax", out=torch.empty(1, 4, 4))
    with pytest.raises(ValueError, match="out_dtype"):
        cpu_bf16_ops.head(x, packed, out_dtype=torch.float16)
    with pytest.raises(ValueError, match="bias"):
        cpu_bf16_ops.head(x, packed, torch.zeros(4))
    with pytest.raises(ValueError, match="256 classes"):
        big = cpu_bf16_ops.pack_head_weight(torch.randn(300, 6))
        cpu_bf16_ops.head(x, big, op="argmax", out=torch.empty(1, 4, 4, dtype=torch.uint8))


def test_outputs_that_overlap_their_inputs_are_refused() -> None:
    """An out sharing elements with an input would be read after other threads wrote it (a timing-dependent
    result): a ValueError. Disjoint channel slots of one buffer (a concat's halves) are fine."""
    from unet_fast.kernels import checks

    g = torch.Generator().manual_seed(5)
    xa = torch.randn(1, 6, 6, 8, generator=g).bfloat16()
    with pytest.raises(ValueError, match="out overlaps input view 0"):
        cpu_bf16.conv2d(xa, cpu_bf16.pack_conv_weight(torch.randn(8, 8, 3, 3, generator=g)), padding=1, out=xa)
    big = torch.randn(1, 12, 12, 8, generator=g).bfloat16()
    with pytest.raises(ValueError, match="out overlaps x"):
        cpu_bf16.conv_transpose2x2(big[:, :6, :6], cpu_bf16.pack_conv_transpose_weight(torch.randn(8, 8, 2, 2, generator=g)),
                                   out=big)  # fmt: skip
    m = torch.randn(1, 4, 4, 3, generator=g).bfloat16()
    with pytest.raises(ValueError, match="out overlaps x"):
        cpu_bf16_ops.maxpool2x2(m, out=m[:, :2, :2])
    c = torch.randn(1, 4, 4, 6, generator=g).bfloat16()
    with pytest.raises(ValueError, match=r"out overlaps inputs\[0\]"):
        cpu_bf16_ops.upsample_concat([c[..., :3], c[..., 3:]], out=c)
    # channel slots of one NHWC buffer: disjoint although their byte ranges interleave
    assert not checks.may_overlap(c[..., :3], c[..., 3:]) and checks.may_overlap(c[..., :4], c[..., 3:])
    buf = torch.full((1, 4, 4, 6), float("nan")).bfloat16()
    buf[..., :3] = c[..., :3]
    cpu_bf16_ops.upsample_concat([buf[..., :3]], out=buf[..., 3:])  # reads one slot, writes the other
    assert torch.equal(buf[..., 3:], c[..., :3])
