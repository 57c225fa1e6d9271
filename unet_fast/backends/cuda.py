"""The `cuda` backend: the CUDA C++ ops of unet_fast._cuda (kernels/cuda.py) on CUDA tensors."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import torch

from unet_fast.backends.base import Backend


def _reason(device: torch.device | None) -> str:
    from unet_fast import _ext

    reason = _ext.cuda_unavailable_reason()
    if reason:
        if "not available" in reason or "not built" in reason:
            reason += "; build it on a machine with nvcc: `UNET_FAST_CUDA_BUILD=1 pip install -e .`"
        return reason
    if device is not None and device.type != "cuda":
        return f"it runs on CUDA tensors, the model/input is on {device}; move it with .cuda() first"
    return ""


def _limits(step: Any, km: ModuleType) -> str:
    """Kernel limits known from the plan alone (kernels/cuda.py raises NotImplementedError for them)."""
    views = getattr(km, "MAX_VIEWS", None)
    if step.kind == "Conv" and views is not None and len(step.inputs) > views:
        return f"the CUDA conv reads at most {views} inputs of a virtual concat, this one {len(step.inputs)}"
    classes = getattr(km, "MAX_HEAD_CLASSES", None)
    if step.kind == "Head" and classes is not None and step.weight.shape[0] > classes:
        return f"the CUDA head supports at most {classes} classes, this one {step.weight.shape[0]}"
    return ""


BACKEND = Backend("cuda", "unet_fast.kernels.cuda", "CUDA C++ kernels (unet_fast._cuda)", _reason,
                  lambda: torch.device("cuda"), _limits)  # fmt: skip
