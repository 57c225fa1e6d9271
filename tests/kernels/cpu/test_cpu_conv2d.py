"""CPU conv2d against spec.conv2d: every activation, bias + residual, the fused 2x2 pool (odd sizes),
output and pool into slots of poisoned buffers, virtual concat of views (upsample-on-read, crop, pad),
conv geometry (stride, dilation, valid padding, 1x1)."""

import pytest
import torch
from cpu_testutil import (
    BATCHES,
    ISAS,
    SIZES,
    assert_close,
    assert_outside_slot_untouched,
    conv_weight,
    poisoned_slot,
)

from unet_fast.kernels import cpu, spec
from unet_fast.kernels.spec import ACTIVATIONS, InputView, Resample

F32 = torch.float32


def run_both(inputs, w, bias, *, cout: int, pool: bool, isa: str | None = None, **kw):
    """Run the CPU kernel (weight packed for `isa`) into poisoned slots and the reference; check values and
    untouched neighbours."""
    views = [spec.as_view(v) for v in inputs]
    ho, wo = spec.conv_output_size(views[0].out_size, tuple(w.shape[2:]), kw.get("stride", 1),
                                   kw.get("padding", 0), kw.get("dilation", 1))  # fmt: skip
    n = views[0].tensor.shape[0]
    buf, slot = poisoned_slot((n, ho, wo, cout), before=3, after=1)
    pbuf, pslot = poisoned_slot((n, ho // 2, wo // 2, cout), before=1, after=2) if pool else (None, None)
    packed = cpu.pack_conv_weight(w, F32, isa=isa)
    assert isa is None or packed.isa == isa
    got = cpu.conv2d(inputs, packed, bias, out=slot, pool_out=pslot, **kw)
    assert got.data_ptr() == slot.data_ptr()
    ref_pool = torch.empty(n, ho // 2, wo // 2, cout) if pool else None
    ref = spec.conv2d(inputs, w, bias, pool_out=ref_pool, **kw)
    assert_close(slot, ref, f"conv2d out {isa}")
    assert_outside_slot_untouched(buf, 3, 1)
    if pool:
        assert_close(pslot, ref_pool, "conv2d pool_out")
        assert_outside_slot_untouched(pbuf, 1, 2)


@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("cin,cout", [(3, 5), (37, 3), (5, 37)])
@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("isa", ISAS)
def test_conv2d_fused_epilogue(n: int, hw: tuple[int, int], cin: int, cout: int, act: str, isa: str) -> None:
    """Cin 37 is packed for Winograd, Cin 3 and 5 run direct: both paths on every kernel variant."""
    x = torch.randn(n, *hw, cin)
    residual = torch.randn(n, *hw, cout)
    run_both([x], conv_weight(cout, cin, 3, 3), torch.randn(cout), cout=cout, pool=True, padding=1, act=act,
             negative_slope=0.2, residual=residual, isa=isa)  # fmt: skip


@pytest.mark.parametrize("mode,ac", [("nearest", False), ("bilinear", False), ("bilinear", True)])
@pytest.mark.parametrize("n", BATCHES)
def test_conv2d_virtual_concat_of_views(mode: str, ac: bool, n: int) -> None:
    """A decoder conv: upsampled deep features (read through the resample, cropped to the skip) ++ a
    centre-cropped skip ++ a pad window, into one conv with its pool."""
    h, w = 17, 23
    deep = torch.randn(n, 9, 12, 5)
    up = InputView(deep, Resample(mode, (18, 24), ac), offset=(1, 0), size=(h, w))
    skip = InputView(torch.randn(n, h + 4, w + 2, 3), offset=(2, 1), size=(h, w))
    pad = InputView(torch.randn(n, h - 1, w - 3, 37), offset=(-1, -2), size=(h, w))
    run_both([up, skip, pad], conv_weight(7, 45, 3, 3), torch.randn(7), cout=7, pool=True, padding=1,
             act="relu")  # fmt: skip


@pytest.mark.parametrize(
    "k,stride,padding,dilation,hw",
    [(3, 1, 0, 1, (17, 23)), (3, 2, 1, 1, (33, 47)), (3, 1, 2, 2, (17, 23)), (1, 1, 0, 1, (17, 23)),
     (5, 1, 2, 1, (9, 11)), (3, 1, 0, 1, (3, 3))],
)  # fmt: skip
def test_conv2d_geometry(k: int, stride: int, padding: int, dilation: int, hw: tuple[int, int]) -> None:
    x = torch.randn(3, *hw, 5)
    ho, wo = spec.conv_output_size(hw, (k, k), stride, padding, dilation)
    run_both([x], conv_weight(6, 5, k, k), torch.randn(6), cout=6, pool=min(ho, wo) >= 2, stride=stride,
             padding=padding, dilation=dilation, act="leaky_relu")  # fmt: skip


def test_conv2d_no_bias_no_residual_no_pool_allocates_out() -> None:
    x, w = torch.randn(2, 17, 23, 5), conv_weight(4, 5, 3, 3)
    got = cpu.conv2d([x], cpu.pack_conv_weight(w, F32), None, padding=1)
    assert_close(got, spec.conv2d([x], w, None, padding=1), "conv2d plain")


def test_conv2d_slice_input_slice_residual() -> None:
    """Input and residual are channel slices of bigger buffers (non-contiguous NHWC)."""
    big = torch.randn(3, 17, 23, 12)
    res_big = torch.randn(3, 17, 23, 9)
    x, residual = big[..., 2:7], res_big[..., 1:7]
    run_both([x], conv_weight(6, 5, 3, 3), torch.randn(6), cout=6, pool=True, padding=1, act="silu",
             residual=residual)  # fmt: skip


def test_conv2d_single_input_channel() -> None:
    """One input channel: PyTorch may return an NCHW-contiguous result, which the launcher must handle."""
    x = torch.randn(2, 33, 47, 1)
    run_both([x], conv_weight(5, 1, 3, 3), torch.randn(5), cout=5, pool=True, act="relu")


def test_conv2d_bad_input() -> None:
    x, w = torch.randn(1, 9, 9, 5), cpu.pack_conv_weight(conv_weight(4, 5, 3, 3), F32)
    with pytest.raises(ValueError, match="channels but the weight expects"):
        cpu.conv2d([x, x], w, None, padding=1)
    with pytest.raises(ValueError, match="unknown activation"):
        cpu.conv2d([x], w, None, act="gelu")
    with pytest.raises(ValueError, match="pool_out has shape"):
        cpu.conv2d([x], w, None, padding=1, pool_out=torch.empty(1, 5, 4, 4))
    with pytest.raises(ValueError, match="bias must have shape"):
        cpu.conv2d([x], w, torch.randn(5), padding=1)
    with pytest.raises(ValueError, match=r"cpu backend supports"):
        cpu.conv2d([x.bfloat16()], w, None)
    with pytest.raises(ValueError, match=r"cpu backend supports"):
        cpu.conv2d([x], w, None, out=torch.empty(1, 7, 7, 4, dtype=torch.float16))
    with pytest.raises(ValueError, match=r"cpu backend supports"):
        cpu.pack_conv_weight(torch.randn(4, 5, 3, 3), torch.float16)
    with pytest.raises(ValueError, match="pack function"):
        cpu.conv2d([x], w.oihw.half(), None)
    with pytest.raises(ValueError, match="unknown conv2d isa"):
        cpu.pack_conv_weight(torch.randn(4, 5, 3, 3), F32, isa="sse9")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_conv2d_huge_padding_is_a_value_error(dtype: torch.dtype) -> None:
    """A padding whose output cannot be allocated (here ~3e4 GiB) is a ValueError naming the shape, in fp32
    and bf16, on every CPU conv kernel of the registry (and cpu.conv2d), not the allocator's RuntimeError."""
    from unet_fast.graph.ir import Conv
    from unet_fast.kernels import registry

    x = torch.randn(1, 5, 5, 4).to(dtype)
    w = torch.randn(4, 4, 3, 3)
    if dtype == torch.float32:
        with pytest.raises(ValueError, match=r"cannot allocate out of shape \(1, 2000003, 2000003, 4\)"):
            cpu.conv2d([x], cpu.pack_conv_weight(w, dtype), padding=10**6)
    kernels = [k for k in registry.kernels("cpu", Conv, dtype) if not registry.unavailable(k)]
    assert kernels
    for k in kernels:
        with pytest.raises(ValueError, match=r"cannot allocate out of shape \(1, 2000003, 2000003, 4\)"):
            k.run([x], k.pack(w, dtype), padding=10**6)


@pytest.mark.parametrize("exact", [False, True])
@pytest.mark.parametrize("shape", [(8, 4, 1, 1), (8, 16, 3, 3)], ids=["1x1", "3x3"])
def test_bf16_engine_refuses_an_unknown_isa_for_every_weight(shape: tuple[int, ...], exact: bool,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A forced unknown CPU variant is a ValueError in bf16 for every conv, as in fp32: before, only a weight
    that took the bf16 Winograd checked it (a 1x1 or exact=True one took "sse9")."""
    import unet_fast

    monkeypatch.setenv("UNET_FAST_KERNELS", "cpu=sse9")
    model = torch.nn.Sequential(torch.nn.Conv2d(shape[1], shape[0], shape[2], padding=shape[2] // 2)).eval()
    with pytest.raises(ValueError, match="unknown CPU kernel isa 'sse9'"):
        unet_fast.optimize(model, torch.randn(1, shape[1], 8, 8), backend="cpu", dtype=torch.bfloat16, exact=exact)
