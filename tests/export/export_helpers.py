"""Shared helpers for the export tests (a plain module: tests/export has no conftest of its own)."""

from __future__ import annotations

import torch

from unet_fast import UNet
from unet_fast.export.report import lively_weights as lively

# ONNX Runtime CPU against PyTorch CPU, both fp32: the same math in a different order. Observed max abs
# errors are ~1e-7 on these small models; TOLERANCES[float32] (1e-4) is the project's fp32 budget.
from unet_fast.kernels.spec import TOLERANCES

FP32_ATOL, FP32_RTOL = TOLERANCES[torch.float32]


def small_unet(seed: int = 0, **kw) -> UNet:
    """A random small UNet (base 4, depth 2 unless given) with lively weights and random BN statistics
    (unet_fast.export.report.lively_weights: why default-initialised U-Nets make weak parity tests)."""
    kw.setdefault("base_channels", 4)
    kw.setdefault("depth", 2)
    torch.manual_seed(seed)
    return lively(UNet(**kw), seed)


def ort_run(path, x: torch.Tensor) -> torch.Tensor:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])


def valid_sizes(model: UNet, lo: int, hi: int) -> list[int]:
    """Input lengths in [lo, hi] that `model` accepts."""
    out = []
    for s in range(lo, hi + 1):
        try:
            model.output_size(s, s)
        except ValueError:
            continue
        out.append(s)
    return out


def load_test_model(name: str):
    """A test-only model module from tests/models (not a package), loaded by path."""
    import importlib.util
    import sys
    from pathlib import Path

    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parents[1] / "models" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def lively_norms(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random affine parameters for InstanceNorm / GroupNorm / LayerNorm (lively_weights randomises only
    BatchNorms; defaults 1 and 0 would make a scale or bias cast to the wrong type invisible) and random
    running statistics for InstanceNorms that track them."""
    from torch import nn

    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.InstanceNorm2d, nn.GroupNorm, nn.LayerNorm)) and getattr(m, "weight", None) is not None:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.3)
            if isinstance(m, nn.InstanceNorm2d) and m.track_running_stats:
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def rel_l2(reference: torch.Tensor, got: torch.Tensor) -> float:
    ref, out = reference.double(), got.double()
    return float((out - ref).norm() / ref.norm())


def torch_half_rel_l2(model: torch.nn.Module, x: torch.Tensor, reference: torch.Tensor) -> float | None:
    """How far PyTorch's own fp16 (the model in half, half input) is from its fp32 `reference`; None where
    PyTorch's CPU has no half kernel for a layer (LocalResponseNorm's avg_pool3d)."""
    import copy

    try:
        with torch.no_grad():
            half = copy.deepcopy(model).half()(x.half()).float()
    except RuntimeError:
        return None
    return rel_l2(reference, half)
