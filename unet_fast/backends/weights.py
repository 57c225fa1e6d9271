"""Prepared weights, once per (backend, device, dtype): packed / Winograd-transformed conv weights, head
weights, biases on the device, fallback callables with their constants on the device.

Every per-shape Executor of one FusedUNet takes its weights from the same WeightStore, keyed by the plan
tensor's storage (data pointer, shape, strides): plans derived for different input sizes hold the same
folded weight tensors (graph/symbolic.py shares them), so a weight is packed once and never exists twice.
The store is filled while a plan is prepared (optimize time for the example shape, which already names
every weight); running a plan only reads it. It also holds what the caller forced (UNET_FAST_KERNELS and
exact=True, read once when the store is made: kernels/registry.Choices) and the CPU variant rows chosen from
that, so every plan of one engine chooses its kernels alike.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import is_dataclass
from typing import Any

import torch
from torch import Tensor

from unet_fast.kernels.registry import Choices, Context


class WeightStore:
    def __init__(self, backend_name: str, device: torch.device, dtype: torch.dtype, exact: bool = False,
                 choices: Choices | None = None) -> None:  # fmt: skip
        """`choices`: what the caller forced; None reads UNET_FAST_KERNELS now (Choices.from_env), with `exact`.
        Raises ValueError for a malformed UNET_FAST_KERNELS."""
        self.backend_name, self.device, self.dtype, self.exact = backend_name, device, dtype, exact
        self.context = Context(choices if choices is not None else Choices.from_env(exact=exact))
        self._items: dict[tuple, Any] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, role: str, source: Any, make: Callable[[], Any]) -> Any:
        """The prepared form of `source` for `role` (e.g. "conv", "bias"), made by `make()` the first time."""
        key = (role, *_identity(source))
        entry = self._items.get(key)
        if entry is None:
            with self._lock:
                entry = self._items.get(key)
                if entry is None:
                    # the source is kept alive with its prepared form: its data pointer cannot be reused by
                    # another tensor while the key exists
                    entry = self._items[key] = (source, make())
        return entry[1]

    def entries(self) -> list[tuple[str, Any, Any]]:
        """(role, source, prepared form) of every prepared weight (what an engine file saves:
        engine/artifact.py)."""
        return [(k[0], src, prepared) for k, (src, prepared) in list(self._items.items())]

    def preload(self, role: str, source: Any, prepared: Any) -> None:
        """Hold `prepared` as the prepared form of `source` for `role` (a loaded engine's packed weights), so
        get() returns it instead of making it again."""
        with self._lock:
            self._items.setdefault((role, *_identity(source)), (source, prepared))

    def forget(self, sources: list[Any]) -> None:
        """Drop the prepared forms of `sources` (a capture that was evicted; executors still holding them
        keep them until they go too)."""
        ids = {_identity(s) for s in sources}
        with self._lock:
            for key in [k for k in self._items if tuple(k[1:]) in ids]:
                del self._items[key]

    def nbytes(self) -> int:
        """Bytes held by prepared tensors (packed weights report theirs through `.nbytes` or tensors inside)."""
        total = 0
        for _, v in list(self._items.values()):
            total += _nbytes(v)
        return total


def _identity(t: Any) -> tuple:
    if isinstance(t, Tensor):
        return ("t", t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype, str(t.device))
    return ("o", id(t))


def _nbytes(v: Any) -> int:
    if isinstance(v, Tensor):
        return v.numel() * v.element_size()
    if hasattr(v, "__dict__"):
        # tensors inside, and inside a packed form that wraps another (the cpu backend's bf16 tile weights)
        return sum(_nbytes(x) for x in vars(v).values() if isinstance(x, Tensor) or is_dataclass(x))
    if isinstance(v, (tuple, list)):
        return sum(_nbytes(x) for x in v)
    return 0
