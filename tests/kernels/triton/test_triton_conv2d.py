"""Parity of the Triton fused conv with spec.conv2d: geometry, activations, slot output, residual, virtual
concat, resampled / cropped / padded views, the pool epilogue, bad calls. Under the interpreter on CPU by
default; compiled on the GPU, every shipped config, with UNET_FAST_TEST_ON_GPU=1 (conftest.py)."""

from __future__ import annotations

import pytest
import torch
from triton_helpers import (
    DTYPE_IDS,
    DTYPES,
    assert_outside_untouched,
    assert_parity,
    conv_weight,
    device,
    launch_configs,
    poisoned_slot,
    rand,
)

from unet_fast.kernels import spec
from unet_fast.kernels import triton as tk
from unet_fast.kernels.spec import InputView, Resample

pytestmark = pytest.mark.gpu  # runs compiled on a GPU in GPU mode (conftest.py), interpreted otherwise

# Large tiles keep the interpreter fast (its cost is per program); Cout 37 > BLOCK_N splits columns.
CFG = {"BLOCK_M": 1024, "BLOCK_N": 32, "BLOCK_K": 32, "num_warps": 4, "num_stages": 1}


def run_both(inputs, w, bias, dtype, cout, *, out_hw, n, pool=False, **kw):
    """Run the kernel into a poisoned slot (and pool slot) and the reference; check both, for every config."""
    ref_pool = torch.empty(n, out_hw[0] // 2, out_hw[1] // 2, cout) if pool else None
    ref = spec.conv2d(inputs, w, bias, pool_out=ref_pool, **kw)
    for cfg in launch_configs("conv2d", dtype, CFG):
        buf, out = poisoned_slot(n, *out_hw, cout, dtype)
        pbuf, pool_out = poisoned_slot(n, out_hw[0] // 2, out_hw[1] // 2, cout, dtype, before=1, after=4)
        got = tk.conv2d(inputs, tk.pack_conv_weight(w, dtype), bias, out=out, pool_out=pool_out if pool else None,
                        config=cfg, **kw)  # fmt: skip
        assert got.data_ptr() == out.data_ptr()
        assert_parity(out, ref, dtype, f"out {cfg}")
        assert_outside_untouched(buf, 3, 3 + cout, f"out {cfg}")
        if pool:
            assert_parity(pool_out, ref_pool, dtype, f"pool_out {cfg}")
            assert_outside_untouched(pbuf, 1, 1 + cout, f"pool_out {cfg}")
        else:
            assert pbuf.isnan().all()


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("act", spec.ACTIVATIONS)
def test_conv3x3_bias_act_into_slot(dtype, act):
    n = 3 if act == "relu" else 1
    x = rand(n, 17, 23, 37, dtype=dtype)
    run_both([x], conv_weight(21, 37, 3), torch.randn(21), dtype, 21, out_hw=(17, 23), n=n, padding=1,
             act=act, negative_slope=0.2)  # fmt: skip


@pytest.mark.parametrize(
    "k,stride,padding,dilation,cin,hw",
    [
        (1, 1, 0, 1, 37, (17, 23)),  # 1x1
        (7, 2, 3, 1, 3, (33, 47)),  # ResNet stem
        (3, 1, 2, 2, 5, (17, 23)),  # dilated
        (3, 2, 0, 1, 5, (17, 23)),  # strided, valid
        (3, 1, 0, 1, 5, (17, 23)),  # valid (original U-Net)
    ],
    ids=["1x1", "7x7s2", "3x3d2", "3x3s2", "3x3valid"],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_conv_geometry(k, stride, padding, dilation, cin, hw, dtype):
    n = 3 if hw == (17, 23) else 1
    x = rand(n, *hw, cin, dtype=dtype)
    ho, wo = spec.conv_output_size(hw, (k, k), stride, padding, dilation)
    run_both([x], conv_weight(19, cin, k), torch.randn(19), dtype, 19, out_hw=(ho, wo), n=n, stride=stride,
             padding=padding, dilation=dilation, act="relu")  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_conv_residual_no_bias(dtype):
    x, res = rand(3, 17, 23, 5, dtype=dtype), rand(3, 17, 23, 37, dtype=dtype)
    run_both([x], conv_weight(37, 5, 3), None, dtype, 37, out_hw=(17, 23), n=3, padding=1, act="relu",
             residual=res)  # fmt: skip


def test_conv_residual_in_place():
    """out = act(conv + out): the residual is the output slot itself."""
    x, w, b = rand(3, 17, 23, 5), conv_weight(6, 5, 3), torch.randn(6)
    for cfg in launch_configs("conv2d", torch.float32, CFG):
        buf = rand(3, 17, 23, 9)
        res = buf[..., 2:8]
        ref = spec.conv2d([x], w, b, padding=1, act="relu", residual=res.clone())
        tk.conv2d([x], tk.pack_conv_weight(w, torch.float32), b, padding=1, act="relu", residual=res, out=res,
                  config=cfg)  # fmt: skip
        assert_parity(res, ref, torch.float32, f"in place {cfg}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_conv_virtual_concat(dtype):
    a, b, c = (
        rand(3, 17, 23, 5, dtype=dtype),
        rand(3, 17, 23, 37, dtype=dtype),
        rand(3, 17, 23, 3, dtype=dtype),
    )
    run_both([a, b, c], conv_weight(21, 45, 3), torch.randn(21), dtype, 21, out_hw=(17, 23), n=3, padding=1,
             act="silu")  # fmt: skip


def test_conv_four_inputs_from_slots_of_one_buffer():
    """Inputs may themselves be channel slices (non-contiguous H/W strides)."""
    big = rand(1, 17, 23, 50)
    views = [big[..., 0:5], big[..., 5:10], big[..., 10:47], big[..., 47:50]]
    run_both(views, conv_weight(7, 50, 3), torch.randn(7), torch.float32, 7, out_hw=(17, 23), n=1, padding=1)


# Decoder reads: (low-res shape, resample, window offset, window size) against a 17x23 skip.
VIEWS = {
    "nearest2x_pad": ((8, 11), Resample("nearest", (16, 22)), (0, 0), (17, 23)),
    "nearest_any": ((7, 10), Resample("nearest", (17, 23)), (0, 0), None),
    "bilinear_ac_pad": ((8, 11), Resample("bilinear", (16, 22), True), (-1, -1), (17, 23)),
    "bilinear_2x_crop": ((9, 12), Resample("bilinear", (18, 24), False), (1, 0), (17, 23)),
    "bilinear_any": ((9, 12), Resample("bilinear", (17, 23), False), (0, 0), None),
    "bilinear_ac_any": ((9, 12), Resample("bilinear", (17, 23), True), (0, 0), None),
    "crop": ((25, 31), None, (4, 4), (17, 23)),
    "pad": ((15, 20), None, (-1, -2), (17, 23)),
}


FLAT_K_VIEWS = ("nearest_any", "bilinear_ac_any", "crop", "bilinear_ac_pad")
# fp32 reads every view; fp16/bf16 the decoder's common reads (milesial pads, a 2x bilinear crop).
VIEW_CASES = [(name, torch.float32) for name in VIEWS] + [
    (name, dt) for name in ("nearest2x_pad", "bilinear_ac_pad", "bilinear_2x_crop") for dt in DTYPES[1:]
]


@pytest.mark.parametrize(
    "name,dtype", VIEW_CASES, ids=[f"{n}-{d}".replace("torch.", "") for n, d in VIEW_CASES]
)
def test_conv_reads_views(name, dtype):
    low_hw, resample, offset, size = VIEWS[name]
    n = 3 if dtype == torch.float32 else 1
    # < 16 channels take the flattened (tap, channel) reduction, >= 16 the tap-major one: both read views.
    c_low = 7 if name in FLAT_K_VIEWS else 19
    skip, low = rand(n, 17, 23, 5, dtype=dtype), rand(n, *low_hw, c_low, dtype=dtype)
    view = InputView(low, resample, offset, size)
    run_both([skip, view], conv_weight(21, 5 + c_low, 3), torch.randn(21), dtype, 21, out_hw=(17, 23), n=n,
             padding=1, act="relu")  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("hw", [(17, 23), (16, 22)], ids=["odd", "even"])
def test_conv_pool_epilogue(dtype, hw):
    n = 3 if hw == (17, 23) else 1
    x = rand(n, *hw, 5, dtype=dtype)
    run_both([x], conv_weight(21, 5, 3), torch.randn(21), dtype, 21, out_hw=hw, n=n, padding=1, act="relu",
             pool=True)  # fmt: skip


def test_conv_pool_with_everything():
    """Pool + residual + a resampled input + stride: the epilogue's quad order with every read."""
    skip, low = rand(3, 17, 23, 5), rand(3, 9, 12, 6)
    res = rand(3, 9, 12, 8)
    view = InputView(low, Resample("bilinear", (18, 24)), (1, 1), (17, 23))
    run_both([skip, view], conv_weight(8, 11, 3), torch.randn(8), torch.float32, 8, out_hw=(9, 12), n=3,
             stride=2, padding=1, act="leaky_relu", residual=res, pool=True)  # fmt: skip


def test_conv_default_interpreter_config_and_allocated_out():
    x, w, b = rand(3, 17, 23, 5), conv_weight(6, 5, 3), torch.randn(6)
    got = tk.conv2d([x], tk.pack_conv_weight(w, torch.float32), b, padding=1, act="relu")
    assert_parity(got, spec.conv2d([x], w, b, padding=1, act="relu"), torch.float32)
    got = tk.conv2d(x, tk.pack_conv_weight(w, torch.float32), b, padding=1)  # a bare tensor as the input
    assert_parity(got, spec.conv2d([x], w, b, padding=1), torch.float32)


# ----------------------------------------------------------------------------------------------------
# Bad calls: a ValueError that says what was expected
# ----------------------------------------------------------------------------------------------------


def _conv(inputs, w=None, **kw):
    w = conv_weight(4, 5, 3) if w is None else w
    return tk.conv2d(inputs, tk.pack_conv_weight(w, torch.float32), None, padding=1, config=CFG, **kw)


def test_bad_calls_raise_value_error():
    x = rand(1, 9, 11, 5)
    with pytest.raises(ValueError, match="channels but the weight expects 5"):
        _conv([rand(1, 9, 11, 6)])
    with pytest.raises(ValueError, match="dtype"):
        _conv([x.double()])
    with pytest.raises(ValueError, match="pack with pack_conv_weight"):
        tk.conv2d([x.half()], tk.pack_conv_weight(conv_weight(4, 5, 3), torch.float32), None, padding=1)
    with pytest.raises(ValueError, match="channel stride 1"):
        _conv([rand(1, 5, 9, 11).permute(0, 2, 3, 1)])  # an NCHW tensor viewed as NHWC
    with pytest.raises(ValueError, match=r"out has shape .* expected \(1, 9, 11, 4\)"):
        _conv([x], out=torch.empty(1, 9, 11, 10)[..., 7:10])  # the slot is 3 channels wide, not 4
    with pytest.raises(ValueError, match=f"expects {device()} tensors"):
        _conv([x.to("meta")], w=conv_weight(4, 5, 3).to("meta"))
    with pytest.raises(ValueError, match="at most 4 inputs"):
        _conv([rand(1, 9, 11, 1)] * 5)
    with pytest.raises(ValueError, match="packed conv weight"):
        tk.conv2d([x], conv_weight(4, 5, 3)[0], None)
