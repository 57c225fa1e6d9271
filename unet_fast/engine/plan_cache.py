"""A bounded LRU of per-shape state: the concrete plan, its buffer plan and the executor holding the
activation arenas (one per thread, in a threading.local), keyed by the input's (N, H, W).

Evicting an entry drops the executor, and with it every thread's arena for that shape (a thread still
running it keeps its own reference until the call returns). Weights are not here: they live once per
(backend, device, dtype) in a WeightStore shared by all entries.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")
DEFAULT_MAX_CACHED_SHAPES = 8  # a base-32 U-Net at 256x256 needs ~40 MiB of arena per thread and shape


class PlanCache(Generic[V]):
    def __init__(self, max_entries: int = DEFAULT_MAX_CACHED_SHAPES) -> None:
        if not isinstance(max_entries, int) or isinstance(max_entries, bool) or max_entries < 1:
            raise ValueError(f"max_cached_shapes must be an int >= 1, got {max_entries!r}")
        self.max_entries = max_entries
        self._items: OrderedDict[tuple[int, ...], V] = OrderedDict()
        self._lock = threading.Lock()
        self._build_lock = threading.RLock()  # one build at a time: a build may capture the model again
        self.evictions = 0

    def get(self, key: tuple[int, ...], build: Callable[[], V]) -> V:
        with self._lock:
            v = self._items.get(key)
            if v is not None:
                self._items.move_to_end(key)
                return v
        with self._build_lock:
            with self._lock:
                v = self._items.get(key)
            if v is None:
                v = build()
            with self._lock:
                self._items[key] = v
                self._items.move_to_end(key)
                while len(self._items) > self.max_entries:
                    self._items.popitem(last=False)
                    self.evictions += 1
            return v

    def items(self) -> list[tuple[tuple[int, ...], V]]:
        """Most recently used last."""
        with self._lock:
            return list(self._items.items())

    def __len__(self) -> int:
        return len(self._items)
