"""Whole U-Nets through the engine on the CUDA kernels (GPU only): every plan step must run on a CUDA
kernel (no reference fallback) and the output must match the PyTorch model."""

from __future__ import annotations

import pytest
import torch

import unet_fast
from unet_fast import UNet
from unet_fast.parity import compare

requires_gpu = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (none visible to torch)"
)
pytestmark = pytest.mark.gpu
# Whole-network error bounds per storage dtype (a dozen layers of one rounding each, fp32 accumulation).
REL_L2 = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}
MODELS = {
    "same-transpose": (lambda: UNet(3, 3, 8, 3, "batch", "transpose", head="softmax"), (2, 3, 36, 44)),
    "same-bilinear": (lambda: UNet(3, 3, 8, 3, "batch", "bilinear", head="softmax"), (2, 3, 36, 44)),
    "valid-transpose": (
        lambda: UNet(1, 2, 4, 3, None, "transpose", padding="valid", head="logits"),
        (1, 1, 92, 92),
    ),
}


@requires_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", MODELS)
def test_unet_on_cuda_kernels_matches_pytorch(name: str, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    build, shape = MODELS[name]
    model = build().eval()
    for m in model.modules():  # random BN statistics, so folding is not a no-op
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(shape)
    with torch.no_grad():
        ref = model(x)
        fast = unet_fast.optimize(model.cuda(), x.cuda(), backend="cuda", dtype=dtype)
        out = fast(x.cuda())
    data = fast.report_data()
    assert data.steps and not any(s.fallback for s in data.steps), fast.report()
    assert all(s.backend == "cuda" for s in data.steps)
    parity = compare(ref, out.float().cpu())
    assert parity.nonfinite == 0, str(parity)
    assert parity.rel_l2 < REL_L2[dtype], f"{name} {dtype}: {parity}"
    assert parity.argmax_agreement > (0.999 if dtype == torch.float32 else 0.98), f"{name} {dtype}: {parity}"
