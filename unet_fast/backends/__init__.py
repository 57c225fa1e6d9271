"""Executors: one Executor (executor.py) walks a Plan, running per step the kernel the registry chose
(kernels/registry.py); each backend file names its device rules. `resolve_backend` resolves a name (or
"auto") to a Backend, with an error naming why not."""

from __future__ import annotations

import importlib

import torch

from unet_fast.backends.base import Backend, BackendUnavailable

# importlib: `from unet_fast.backends import torch` would find the torch package bound above
BACKENDS: dict[str, Backend] = {
    name: importlib.import_module(f"unet_fast.backends.{name}").BACKEND
    for name in ("torch", "cpu", "triton", "cuda")
}

__all__ = ["BACKENDS", "Backend", "BackendUnavailable", "available_backends", "resolve_backend"]


def available_backends(device: torch.device | None = None) -> dict[str, str]:
    """name -> '' if usable on `device`, else the reason it is not."""
    return {name: b.unavailable_reason(device) for name, b in BACKENDS.items()}


def resolve_backend(name: str, device: torch.device, dtype: torch.dtype | None = None) -> tuple[Backend, str]:
    """Returns (backend, why it was chosen). Raises BackendUnavailable naming the reason and the fix.
    With "auto", a backend whose kernels do not support `dtype` is passed over (and the reason given)."""
    if name == "auto":
        order = ("cuda", "triton", "torch") if device.type == "cuda" else ("cpu", "torch")
        skipped = []
        for cand in order:
            b = BACKENDS[cand]
            reason = b.unavailable_reason(device)
            if not reason and cand != "torch":
                reason = b.conv_missing()
            if not reason and dtype is not None and dtype not in b.supported_dtypes():
                reason = f"its kernels support {', '.join(str(d).replace('torch.', '') for d in b.supported_dtypes())}"
            if not reason:
                why = f"auto: picked {cand!r} for {device.type}"
                if skipped:
                    why += " (" + "; ".join(skipped) + ")"
                return b, why
            skipped.append(f"{cand}: {reason}")
        raise AssertionError("the torch backend is always available")
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose from 'auto', {', '.join(map(repr, BACKENDS))}")
    b = BACKENDS[name]
    try:
        b.require(device)
    except BackendUnavailable as e:
        usable = [n for n, r in available_backends(device).items() if not r]
        raise BackendUnavailable(
            f"{e}. Usable here on {device}: {', '.join(usable)} (or backend='auto')"
        ) from None
    return b, f"requested {name!r}"
