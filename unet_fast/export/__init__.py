"""Export paths: ONNX (`to_onnx`) and TensorRT (`to_tensorrt`, `TensorRTModule`).

Imports are lazy so that `import unet_fast.export` needs neither onnx nor tensorrt."""

from __future__ import annotations

from typing import Any

_LAZY = {
    "to_onnx": "unet_fast.export.onnx",
    "read_metadata": "unet_fast.export.onnx",
    "OnnxExport": "unet_fast.export.onnx",
    "ExportError": "unet_fast.export.errors",
    "ExportParityError": "unet_fast.export.errors",
    "DynamicAxesFixedWarning": "unet_fast.export.errors",
    "fold_batchnorm": "unet_fast.export.prepare",
    "to_tensorrt": "unet_fast.export.tensorrt",
    "TensorRTModule": "unet_fast.export.tensorrt",
    "TensorRTUnavailable": "unet_fast.export.tensorrt",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'unet_fast.export' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)
