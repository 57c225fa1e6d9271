"""The `torch` backend: the reference executor. It runs the same Plan with the plain-PyTorch kernels of
kernels/spec.py, on any device, so it proves the graph passes right independently of any fused kernel."""

from __future__ import annotations

import torch

from unet_fast.backends.base import Backend


def _reason(device: torch.device | None) -> str:
    return ""


BACKEND = Backend("torch", "reference executor (PyTorch ops, kernels/spec.py via kernels/reference.py)", _reason,
                  lambda: torch.device("cpu"))  # fmt: skip
