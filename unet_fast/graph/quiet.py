"""Errors speak once, in our words: torch's own logging silenced while the engine probes a model.

Capturing a model at a size it cannot take, running it on fake tensors for its output format, or trying
sizes for an error's hint makes torch's fake-tensor layer log a traceback per failed op ("failed while
attempting to run meta for aten.max_pool2d_with_indices.default", dozens of lines) before the engine raises
its own ValueError, which already names the cause. `quiet_torch_logs()` raises the level of torch's loggers
for the duration and restores them after; torch's exceptions still propagate, and our messages carry them.

Logging levels are process-wide: a log record another thread emits through these loggers during the probe
is dropped too (the probes are short, and happen while optimizing or at a new input size).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

# torch's loggers that speak during export / fake-tensor propagation (their children propagate to them, but
# torch._logging gives some of them a level and handler of their own, so each is set, not only "torch")
TORCH_LOGGERS = ("torch", "torch._subclasses.fake_tensor", "torch._dynamo", "torch._export", "torch.export",
                 "torch.fx.experimental.symbolic_shapes", "torch._functorch", "torch._guards", "torch.fx",
                 "torch._inductor", "torch.utils._sympy")  # fmt: skip

_lock = threading.RLock()
_depth = 0
_saved: dict[str, tuple[int, bool]] = {}


@contextlib.contextmanager
def quiet_torch_logs() -> Iterator[None]:
    """Silence torch's loggers (every one named in TORCH_LOGGERS and any other `torch.*` logger that has its
    own level) inside the block; nested and concurrent uses restore the levels once, when the last ends."""
    global _depth
    with _lock:
        if _depth == 0:
            names = set(TORCH_LOGGERS) | {n for n, lg in logging.root.manager.loggerDict.items()
                                          if n.startswith("torch.") and isinstance(lg, logging.Logger)
                                          and lg.level != logging.NOTSET}  # fmt: skip
            for name in names:
                lg = logging.getLogger(name)
                _saved[name] = (lg.level, lg.disabled)
                lg.setLevel(logging.CRITICAL + 1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for name, (level, disabled) in _saved.items():
                    lg = logging.getLogger(name)
                    lg.setLevel(level)
                    lg.disabled = disabled
                _saved.clear()
