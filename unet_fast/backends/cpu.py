"""The `cpu` backend: the C++ CPU ops of unet_fast._C (kernels/cpu.py) on CPU tensors."""

from __future__ import annotations

import torch

from unet_fast.backends.base import Backend


def _reason(device: torch.device | None) -> str:
    from unet_fast import _ext

    if _ext.cpu_ext is None:
        return f"{_ext._cpu_error}"
    if device is not None and device.type != "cpu":
        return f"it runs on CPU tensors, the model/input is on {device}; use backend='cuda' or 'triton' there"
    return ""


BACKEND = Backend("cpu", "C++ CPU kernels (unet_fast._C, OpenMP)", _reason, lambda: torch.device("cpu"))
