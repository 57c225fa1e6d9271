"""Issue 12 fault 4: FusedUNet returns the shape, dtype and memory format the model returns for the same
input, on every backend and output mode; another layout only when asked (output_memory_format)."""

from __future__ import annotations

import os

import pytest
import torch
from engine_helpers import randomize_bn

import unet_fast
from unet_fast import UNet

# the layout is decided at the module boundary, the same code for every backend; triton runs only under the
# interpreter on CPU (TRITON_INTERPRET=1 before import, as tests/backends does)
BACKENDS = ["torch", "cpu", pytest.param("triton", marks=pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1", reason="runs the Triton interpreter on CPU"))]  # fmt: skip
MODES = ["model", "logits", "probabilities", "classes"]


def _format(t: torch.Tensor) -> str:
    if t.is_contiguous():
        return "contiguous"
    return "channels_last" if t.is_contiguous(memory_format=torch.channels_last) else "other"


@pytest.fixture(scope="module")
def model() -> UNet:
    return randomize_bn(UNet(3, 3, 4, 3, "batch", "transpose", head="softmax"), seed=12)


def _reference(model: UNet, x: torch.Tensor, mode: str) -> torch.Tensor:
    with torch.no_grad():
        probs = model(x)
    if mode in ("model", "probabilities"):
        return probs
    if mode == "logits":  # same layout as the model's last conv: what eager gives for this input
        with torch.no_grad():
            m = UNet(3, 3, 4, 3, "batch", "transpose", head="logits")
            m.load_state_dict(model.state_dict())
            return m.eval()(x)
    return probs.argmax(1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fmt", ["contiguous", "channels_last"])
def test_output_layout_matches_eager(model: UNet, backend: str, mode: str, fmt: str) -> None:
    x = torch.randn(2, 3, 24, 20)
    if fmt == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    fast = unet_fast.optimize(model, torch.randn(1, 3, 24, 20), backend=backend, output=mode)
    out, ref = fast(x), _reference(model, x, mode)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert _format(out) == _format(ref), (mode, fmt, out.stride(), ref.stride())
    if fmt == "contiguous" and out.dim() == 4:
        out.view(out.shape[0], out.shape[1], -1)  # raised before the fix (channels_last strides)


def test_dtype_follows_the_input_and_layout_is_an_explicit_option(model: UNet) -> None:
    x = torch.randn(1, 3, 16, 16)
    fast = unet_fast.optimize(model, x, backend="torch", dtype=torch.bfloat16)
    out = fast(x)
    assert out.dtype == torch.float32 and out.is_contiguous()
    cl = unet_fast.optimize(model, x, backend="cpu", output_memory_format="channels_last")(x)
    assert _format(cl) == "channels_last"
    with pytest.raises(ValueError, match="output_memory_format"):
        unet_fast.optimize(model, x, output_memory_format="nhwc")
