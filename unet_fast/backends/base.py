"""What a backend is: a name whose kernels the kernel registry holds (kernels/registry.py), plus its device
rules. One Executor (backends/executor.py) runs a Plan on any of them; which kernel runs each step is the
registry's choice, made once when the plan is prepared."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from unet_fast.graph.ir import Conv
from unet_fast.kernels import registry


class BackendUnavailable(RuntimeError):
    """The backend cannot run here; the message says why and what to do."""


@dataclass(frozen=True)
class Backend:
    name: str
    description: str
    unavailable_reason: Callable[[torch.device | None], str]  # '' when usable on that device
    default_device: Callable[[], torch.device]

    def kernels(self) -> list[registry.Kernel]:
        """This backend's registered kernels (importing the modules that register them). Raises ImportError
        where one cannot be imported (e.g. triton not installed)."""
        return registry.kernels(self.name)

    def conv_missing(self) -> str:
        """'' when the backend has a Conv kernel, else why not (its modules do not import, or register none)."""
        try:
            return "" if registry.kernels(self.name, Conv) else "it registers no Conv kernel yet"
        except ImportError as e:
            return f"its kernels do not import ({e})"

    def supported_dtypes(self) -> tuple[torch.dtype, ...]:
        """The engine dtypes this backend's Conv kernels run (optimize refuses others)."""
        return registry.dtypes(self.name)

    def require(self, device: torch.device | None) -> None:
        reason = self.unavailable_reason(device)
        if reason:
            raise BackendUnavailable(f"backend {self.name!r} cannot run: {reason}")
