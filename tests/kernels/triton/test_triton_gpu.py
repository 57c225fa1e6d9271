"""On a CUDA machine (UNET_FAST_TEST_ON_GPU=1, so the interpreter is off): the autotuned launch path of
every kernel against spec.py, fp16 and bf16 (tensor cores) and fp32. Skips cleanly without a GPU."""

from __future__ import annotations

import pytest
import torch
from triton_helpers import assert_outside_untouched, assert_parity, conv_weight, poisoned_slot

from unet_fast.kernels import spec
from unet_fast.kernels.spec import InputView, Resample

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none visible to torch)"),
]


@pytest.fixture(scope="module")
def tk():
    from unet_fast.kernels.triton import common

    if common.interpreting():
        pytest.skip(
            "TRITON_INTERPRET=1 is set: run with UNET_FAST_TEST_ON_GPU=1 to test the compiled kernels"
        )
    from unet_fast.kernels import triton as tk

    return tk


def _cuda(*shape, dtype):
    return torch.randn(*shape, device="cuda").to(dtype)


@pytest.mark.parametrize("dtype", spec.FLOAT_DTYPES, ids=["fp32", "fp16", "bf16"])
def test_decoder_conv_autotuned(tk, dtype):
    skip, low = _cuda(2, 67, 91, 64, dtype=dtype), _cuda(2, 33, 45, 64, dtype=dtype)
    view = InputView(low, Resample("bilinear", (66, 90), True), (0, 0), (67, 91))
    w, b = conv_weight(64, 128, 3).cuda(), torch.randn(64, device="cuda")
    buf = poisoned_slot(2, 67, 91, 64, dtype)[0].cuda()
    out = buf[..., 3:67]
    pool = torch.full((2, 33, 45, 64), float("nan"), device="cuda", dtype=dtype)
    tk.conv2d([skip, view], tk.pack_conv_weight(w, dtype), b, padding=1, act="relu", out=out, pool_out=pool)
    ref_pool = torch.empty(2, 33, 45, 64, device="cuda")
    ref = spec.conv2d([skip, view], w, b, padding=1, act="relu", pool_out=ref_pool)
    assert_parity(out, ref, dtype)
    assert_parity(pool, ref_pool, dtype)
    assert_outside_untouched(buf, 3, 67)


@pytest.mark.parametrize("dtype", spec.FLOAT_DTYPES, ids=["fp32", "fp16", "bf16"])
def test_other_ops_autotuned(tk, dtype):
    x = _cuda(2, 33, 45, 64, dtype=dtype)
    wt, bt = torch.randn(64, 32, 2, 2, device="cuda") / 8, torch.randn(32, device="cuda")
    assert_parity(tk.conv_transpose2x2(x, tk.pack_conv_transpose_weight(wt, dtype), bt, act="relu"),
                  spec.conv_transpose2x2(x, wt, bt, act="relu"), dtype)  # fmt: skip
    wh, bh = torch.randn(5, 64, device="cuda") / 8, torch.randn(5, device="cuda")
    assert_parity(
        tk.head(x, tk.pack_head_weight(wh, dtype), bh, "softmax"), spec.head(x, wh, bh, "softmax"), dtype
    )
    assert torch.equal(tk.maxpool2x2(x), spec.maxpool2x2(x))
    views = [x, InputView(_cuda(2, 17, 23, 16, dtype=dtype), Resample("nearest", (33, 45)))]
    assert_parity(tk.upsample_concat(views), spec.upsample_concat(views), dtype)
