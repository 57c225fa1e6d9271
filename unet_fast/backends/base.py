"""What a backend is: a kernel module (the interface at the bottom of kernels/spec.py) plus its device and
dtype rules. One Executor (backends/executor.py) runs a Plan on any of them."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch

# step kind -> the kernel-module functions it needs (pack function first where there is one)
KERNEL_FUNCTIONS: dict[str, tuple[str, ...]] = {
    "Conv": ("pack_conv_weight", "conv2d"),
    "ConvTranspose2x2": ("pack_conv_transpose_weight", "conv_transpose2x2"),
    "Concat": ("upsample_concat",),
    "Resample": ("upsample_concat",),
    "Pool": ("maxpool2x2",),
    "Head": ("pack_head_weight", "head"),
}
ALL_FUNCTIONS = sorted({f for fs in KERNEL_FUNCTIONS.values() for f in fs} | {"SUPPORTED_DTYPES"})


class BackendUnavailable(RuntimeError):
    """The backend cannot run here; the message says why and what to do."""


def _takes_all(step: Any, km: ModuleType) -> str:
    return ""


@dataclass(frozen=True)
class Backend:
    name: str
    kernels_module: str  # import path of the kernel module
    description: str
    unavailable_reason: Callable[[torch.device | None], str]  # '' when usable on that device
    default_device: Callable[[], torch.device]
    # (step, kernel module) -> '' when the kernels take the step, else why not: decided when a plan is
    # prepared, so running never has to rewrite a step (a kernel module may also offer its own supports())
    limits: Callable[[Any, ModuleType], str] = _takes_all

    def kernels(self) -> ModuleType:
        return importlib.import_module(self.kernels_module)

    def supports(self, step: Any, dtype: torch.dtype | None = None) -> str:
        """'' when this backend's kernels run `step` (a graph.ir Step) in `dtype` (None: the kernel module's
        default), else the reason the reference runs it."""
        km = self.kernels()
        why = self.limits(step, km)
        own = getattr(km, "supports", None)
        if not why and callable(own):
            # a module's supports(step, dtype) when its answer depends on the dtype (the cpu backend's bf16)
            takes_dtype = len(inspect.signature(own).parameters) > 1
            verdict = own(step, dtype) if takes_dtype and dtype is not None else own(step)
            why = "" if verdict is True or verdict == "" or verdict is None else (verdict or "refused")
        return why

    def missing_functions(self) -> list[str]:
        """Interface functions the kernel module does not (yet) provide: those steps run the torch reference."""
        try:
            km = self.kernels()
        except ImportError:
            return list(ALL_FUNCTIONS)
        return [f for f in ALL_FUNCTIONS if not hasattr(km, f)]

    def supported_dtypes(self) -> tuple[torch.dtype, ...]:
        km = self.kernels()
        return tuple(getattr(km, "SUPPORTED_DTYPES", (torch.float32,)))

    def require(self, device: torch.device | None) -> None:
        reason = self.unavailable_reason(device)
        if reason:
            raise BackendUnavailable(f"backend {self.name!r} cannot run: {reason}")
