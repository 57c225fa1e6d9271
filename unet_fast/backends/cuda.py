"""The `cuda` backend: the CUDA C++ ops of unet_fast._cuda (kernels/cuda.py) on CUDA tensors."""

from __future__ import annotations

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


BACKEND = Backend("cuda", "CUDA C++ kernels (unet_fast._cuda)", _reason, lambda: torch.device("cuda"))
