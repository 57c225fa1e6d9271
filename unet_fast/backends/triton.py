"""The `triton` backend: the Triton kernels of kernels/triton/ on CUDA tensors, or on CPU tensors under the
Triton interpreter (TRITON_INTERPRET=1, set before triton is imported: slow, for tests)."""

from __future__ import annotations

import importlib.util
import os

import torch

from unet_fast.backends.base import Backend


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _reason(device: torch.device | None) -> str:
    if importlib.util.find_spec("triton") is None:
        return 'the triton package is not installed (`pip install "unet_fast[gpu]"`)'
    if device is not None and device.type == "cpu" and not interpreting():
        return ("Triton kernels need a CUDA device; on CPU they run only under the interpreter "
                "(set TRITON_INTERPRET=1 before importing unet_fast; slow, for testing)")  # fmt: skip
    if device is not None and device.type == "cuda" and not torch.cuda.is_available():
        return "no CUDA device is visible to torch (torch.cuda.is_available() is False)"
    if device is None and not torch.cuda.is_available() and not interpreting():
        return "no CUDA device is visible to torch and TRITON_INTERPRET is not set"
    return ""


def _default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() and not interpreting() else torch.device("cpu")


BACKEND = Backend("triton", "Triton kernels (GPU, or the interpreter on CPU)", _reason, _default_device)
