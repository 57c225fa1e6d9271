"""Parity of the Triton transposed conv 2x2, standalone max-pool and upsample + concat with spec.py. Under
the interpreter by default; compiled on the GPU, every shipped config, with UNET_FAST_TEST_ON_GPU=1."""

from __future__ import annotations

import pytest
import torch
from triton_helpers import (
    DTYPE_IDS,
    DTYPES,
    assert_outside_untouched,
    assert_parity,
    device,
    launch_configs,
    poisoned_slot,
    rand,
)

from unet_fast.kernels import spec
from unet_fast.kernels import triton as tk
from unet_fast.kernels.spec import InputView, Resample

pytestmark = pytest.mark.gpu  # runs compiled on a GPU in GPU mode (conftest.py), interpreted otherwise

GEMM_CFG = {"BLOCK_M": 1024, "BLOCK_N": 64, "BLOCK_K": 32, "num_warps": 4, "num_stages": 1}
COPY_CFG = {"BLOCK_M": 1024, "BLOCK_C": 32, "num_warps": 4, "num_stages": 1}


# ----------------------------------------------------------------------------------------------------
# conv_transpose2x2
# ----------------------------------------------------------------------------------------------------


# Every activation in fp32; fp16 and bf16 with ReLU (the U-Net case).
CT_CASES = [(torch.float32, a) for a in spec.ACTIVATIONS] + [(dt, "relu") for dt in DTYPES[1:]]


@pytest.mark.parametrize("dtype,act", CT_CASES, ids=[f"{a}-{str(d)[6:]}" for d, a in CT_CASES])
def test_conv_transpose2x2_into_slot(dtype, act):
    n = 3 if act == "relu" else 1
    x = rand(n, 9, 12, 37, dtype=dtype)
    w, b = torch.randn(37, 21, 2, 2) / 37**0.5, torch.randn(21)  # 4 * 21 columns: two column tiles
    ref = spec.conv_transpose2x2(x, w, b, act=act, negative_slope=0.1)
    for cfg in launch_configs("conv_transpose2x2", dtype, GEMM_CFG):
        buf, out = poisoned_slot(n, 18, 24, 21, dtype)
        got = tk.conv_transpose2x2(x, tk.pack_conv_transpose_weight(w, dtype), b, act=act, negative_slope=0.1,
                                   out=out, config=cfg)  # fmt: skip
        assert got.data_ptr() == out.data_ptr()
        assert_parity(out, ref, dtype, f"conv_transpose2x2 {cfg}")
        assert_outside_untouched(buf, 3, 24, f"conv_transpose2x2 {cfg}")


def test_conv_transpose2x2_default_config_no_bias_odd_input():
    x, w = rand(3, 17, 23, 5), torch.randn(5, 3, 2, 2)
    got = tk.conv_transpose2x2(x, tk.pack_conv_transpose_weight(w, torch.float32), None)
    assert_parity(got, spec.conv_transpose2x2(x, w, None), torch.float32)


def test_conv_transpose2x2_bad_calls():
    x = rand(1, 4, 5, 6)
    packed = tk.pack_conv_transpose_weight(torch.randn(6, 3, 2, 2), torch.float32)
    with pytest.raises(ValueError, match="x has 7 channels but the weight expects 6"):
        tk.conv_transpose2x2(rand(1, 4, 5, 7), packed, None)
    with pytest.raises(ValueError, match="pack with pack_conv_transpose_weight"):
        tk.conv_transpose2x2(x.half(), packed, None)
    with pytest.raises(ValueError, match=r"out has shape .* expected \(1, 8, 10, 3\)"):
        tk.conv_transpose2x2(x, packed, None, out=torch.empty(1, 8, 10, 5)[..., :2])
    with pytest.raises(ValueError, match="IOHW"):
        tk.pack_conv_transpose_weight(torch.randn(6, 3, 3, 3), torch.float32)
    with pytest.raises(ValueError, match="unknown activation"):
        tk.conv_transpose2x2(x, packed, None, act="gelu")


# ----------------------------------------------------------------------------------------------------
# maxpool2x2
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("hw", [(17, 23), (16, 22)], ids=["odd", "even"])
def test_maxpool2x2_into_slot(dtype, hw):
    n = 3 if hw[0] % 2 else 1
    x = rand(n, *hw, 37, dtype=dtype)
    for cfg in launch_configs("maxpool2x2", dtype, COPY_CFG):
        buf, out = poisoned_slot(n, hw[0] // 2, hw[1] // 2, 37, dtype)
        assert tk.maxpool2x2(x, out, config=cfg).data_ptr() == out.data_ptr()
        assert torch.equal(out, spec.maxpool2x2(x)), f"a max-pool is exact {cfg}"
        assert_outside_untouched(buf, 3, 40, f"maxpool2x2 {cfg}")


def test_maxpool2x2_reads_a_slot_default_config():
    x = rand(3, 17, 23, 12)[..., 2:7]
    torch.testing.assert_close(tk.maxpool2x2(x), spec.maxpool2x2(x), rtol=0, atol=0)


def test_maxpool2x2_bad_calls():
    with pytest.raises(ValueError, match="at least 2x2"):
        tk.maxpool2x2(rand(1, 1, 5, 3))
    with pytest.raises(ValueError, match=r"out has shape .* expected \(1, 2, 2, 3\)"):
        tk.maxpool2x2(rand(1, 5, 5, 3), torch.empty(1, 3, 3, 3))
    with pytest.raises(ValueError, match=f"expects {device()} tensors"):
        tk.maxpool2x2(rand(1, 5, 5, 3).to("meta"))


# ----------------------------------------------------------------------------------------------------
# upsample_concat
# ----------------------------------------------------------------------------------------------------

UP_VIEWS = {
    "nearest2x_pad": lambda x: InputView(x, Resample("nearest", (18, 24)), (0, 0), (19, 25)),
    "bilinear_ac": lambda x: InputView(x, Resample("bilinear", (19, 25), True)),
    "bilinear": lambda x: InputView(x, Resample("bilinear", (18, 24), False), (-1, 0), (19, 25)),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("mode", list(UP_VIEWS))
def test_upsample_concat_into_slot(dtype, mode):
    n = 3 if mode == "bilinear" else 1
    skip, low, big = (
        rand(n, 19, 25, 5, dtype=dtype),
        rand(n, 9, 12, 37, dtype=dtype),
        rand(n, 23, 29, 3, dtype=dtype),
    )
    views = [skip, UP_VIEWS[mode](low), InputView(big, offset=(2, 2), size=(19, 25))]
    ref = spec.upsample_concat(views)
    for cfg in launch_configs("upsample_concat", dtype, COPY_CFG):
        buf, out = poisoned_slot(n, 19, 25, 45, dtype)
        assert tk.upsample_concat(views, out, config=cfg).data_ptr() == out.data_ptr()
        assert_parity(out, ref, dtype, f"upsample_concat {cfg}")
        assert_outside_untouched(buf, 3, 48, f"upsample_concat {cfg}")


def test_upsample_concat_default_config_allocates():
    views = [InputView(rand(3, 5, 7, 4), Resample("nearest", (17, 23)))]
    assert_parity(tk.upsample_concat(views), spec.upsample_concat(views), torch.float32)


def test_upsample_concat_bad_calls():
    with pytest.raises(ValueError, match="views must agree"):
        tk.upsample_concat([rand(1, 4, 4, 2), rand(1, 5, 4, 2)])
    with pytest.raises(ValueError, match=r"out has shape .* expected \(1, 4, 4, 4\)"):
        tk.upsample_concat([rand(1, 4, 4, 2), rand(1, 4, 4, 2)], torch.empty(1, 4, 4, 5))
    with pytest.raises(ValueError, match="inputs\\[1\\] has dtype"):
        tk.upsample_concat([rand(1, 4, 4, 2), rand(1, 4, 4, 2).half()])
