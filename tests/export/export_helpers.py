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
