"""Parity of the Triton head (1x1 conv + softmax / sigmoid / argmax / logits) with spec.head. Under the
interpreter by default; compiled on the GPU, every shipped config, with UNET_FAST_TEST_ON_GPU=1."""

from __future__ import annotations

import pytest
import torch
from triton_helpers import (
    DTYPE_IDS,
    DTYPES,
    assert_outside_untouched,
    assert_parity,
    launch_configs,
    poisoned_slot,
    rand,
)

from unet_fast.kernels import spec
from unet_fast.kernels import triton as tk
from unet_fast.kernels.spec import InputView, Resample

pytestmark = pytest.mark.gpu  # runs compiled on a GPU in GPU mode (conftest.py), interpreted otherwise

CFG = {"BLOCK_M": 1024, "BLOCK_K": 32, "num_warps": 4, "num_stages": 1}


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("op", ["softmax", "sigmoid", "logits"])
def test_head_float_ops_into_slot(op, dtype):
    n, k = (3, 5) if op == "softmax" else (1, 3)
    x = rand(n, 17, 23, 37, dtype=dtype)
    w, b = torch.randn(k, 37, 1, 1) / 37**0.5, torch.randn(k)
    ref = spec.head(x, w, b, op)
    for cfg in launch_configs("head", dtype, CFG):
        buf, out = poisoned_slot(n, 17, 23, k, dtype)
        got = tk.head(x, tk.pack_head_weight(w, dtype), b, op, out, config=cfg)
        assert got.data_ptr() == out.data_ptr()
        assert_parity(out, ref, dtype, f"{op} {cfg}")
        assert_outside_untouched(buf, 3, 3 + k, f"{op} {cfg}")


def assert_argmax(got: torch.Tensor, logits: torch.Tensor) -> None:
    """Exact class map wherever the reference's top two logits are further apart than the dtype's
    tolerance; at near-ties the chosen class must still be within that tolerance of the maximum."""
    atol, _ = spec.TOLERANCES[torch.float32]
    top2 = logits.topk(2, dim=-1).values
    clear = (top2[..., 0] - top2[..., 1]) > atol
    ref = logits.argmax(-1)
    assert torch.equal(got.long()[clear], ref[clear]), (
        f"{int((got.long() != ref)[clear].sum())} pixels differ"
    )
    chosen = logits.gather(-1, got.long().unsqueeze(-1)).squeeze(-1)
    assert (top2[..., 0] - chosen).max() <= atol


# Every input dtype into int64; the narrower class maps (int32, uint8) from fp32 inputs.
ARGMAX_CASES = [(dt, torch.int64) for dt in DTYPES] + [
    (torch.float32, torch.int32),
    (torch.float32, torch.uint8),
]


@pytest.mark.parametrize(
    "dtype,out_dtype", ARGMAX_CASES, ids=["fp32-i64", "fp16-i64", "bf16-i64", "fp32-i32", "fp32-u8"]
)
def test_head_argmax(dtype, out_dtype):
    n = 3 if out_dtype == torch.int64 else 1
    x = rand(n, 17, 23, 37, dtype=dtype)
    w, b = torch.randn(19, 37) / 37**0.5, torch.randn(19)
    # Reference logits from the same rounded weight the kernel multiplies (argmax has no tolerance).
    w_rounded = w.to(dtype).float()
    logits = spec.head(x, w_rounded, b, "logits", torch.empty(n, 17, 23, 19))
    for cfg in launch_configs("head", dtype, CFG):
        out = torch.full((n, 17, 23), 255, dtype=out_dtype)
        got = tk.head(x, tk.pack_head_weight(w, dtype), b, "argmax", out, config=cfg)
        assert got.data_ptr() == out.data_ptr()
        assert_argmax(out, logits)


def test_head_argmax_ties_pick_the_first_class():
    x = rand(1, 5, 7, 3)
    w = torch.zeros(4, 3)
    w[1] = w[3] = torch.tensor([1.0, -1.0, 0.5])  # classes 1 and 3 always tie for the maximum
    bias = torch.tensor([-50.0, 0.0, -50.0, 0.0])
    for cfg in launch_configs("head", torch.float32, CFG):
        got = tk.head(x, tk.pack_head_weight(w, torch.float32), bias, "argmax", config=cfg)
        assert torch.equal(got, spec.head(x, w, bias, "argmax"))
        assert (got == 1).all()


def test_head_softmax_is_stable_for_huge_logits():
    """Logits near 200: exp() of them overflows fp32 (> 3.4e38), so only a max-shifted softmax passes."""
    x = rand(1, 9, 11, 16)
    w, b = torch.randn(7, 16) / 4, 200 + torch.randn(7)
    for cfg in launch_configs("head", torch.float32, CFG):
        got = tk.head(x, tk.pack_head_weight(w, torch.float32), b, "softmax", config=cfg)
        assert_parity(got, spec.head(x, w, b, "softmax"), torch.float32, f"huge logits {cfg}")


@pytest.mark.parametrize("op", ["softmax", "argmax"])
def test_head_reads_a_view_without_bias(op):
    """A head reading an upsampled (bilinear) and window-padded view, default interpreter config."""
    x = rand(3, 9, 12, 5)
    view = InputView(x, Resample("bilinear", (18, 24), False), (-1, 1), (17, 23))
    w = torch.randn(3, 5) / 5**0.5
    got = tk.head(view, tk.pack_head_weight(w, torch.float32), None, op)
    if op == "argmax":
        assert_argmax(got, spec.head(view, w, None, "logits"))
    else:
        assert_parity(got, spec.head(view, w, None, op), torch.float32)


def test_head_bad_calls():
    x = rand(1, 5, 7, 8)
    packed = tk.pack_head_weight(torch.randn(3, 8), torch.float32)
    with pytest.raises(ValueError, match="8 channels but the head weight expects 6"):
        tk.head(x, tk.pack_head_weight(torch.randn(3, 6), torch.float32), None, "softmax")
    with pytest.raises(ValueError, match="unknown head op"):
        tk.head(x, packed, None, "tanh")
    with pytest.raises(ValueError, match="pack with pack_head_weight"):
        tk.head(x.half(), packed, None, "softmax")
    with pytest.raises(ValueError, match=r"out has shape .* expected \(1, 5, 7, 3\)"):
        tk.head(x, packed, None, "softmax", torch.empty(1, 5, 7, 4))
    with pytest.raises(ValueError, match=r"out has dtype torch\.float32"):
        tk.head(x, packed, None, "argmax", torch.empty(1, 5, 7))
    with pytest.raises(ValueError, match="at most 256 classes"):
        tk.head(rand(1, 2, 2, 4), tk.pack_head_weight(torch.randn(300, 4), torch.float32), None, "softmax")
    with pytest.raises(ValueError, match="channel stride 1"):
        tk.head(rand(1, 8, 5, 7).permute(0, 2, 3, 1), packed, None, "softmax")
