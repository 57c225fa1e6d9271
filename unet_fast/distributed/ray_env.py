"""Ray as an optional dependency: a clear error naming the install command when it is missing, and one
place that starts (or joins) a Ray cluster and knows whether it must stop it again."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

INSTALL_HINT = 'pip install "unet_fast[ray]"  (Ray Data + Ray Serve, ray>=2.40)'


class RayMissingError(RuntimeError):
    """Ray (or one of its Data / Serve parts) is not installed."""


def require_ray(part: str = "") -> ModuleType:
    """Import `ray` (and `ray.<part>`, e.g. "data" or "serve"); RayMissingError with the install command
    when that fails. Returns the `ray` module."""
    try:
        ray = importlib.import_module("ray")
        if part:
            importlib.import_module(f"ray.{part}")
    except ImportError as e:
        what = f"ray[{part}]" if part else "ray"
        raise RayMissingError(f"this needs {what}, which is not installed ({e}); install it with: "
                              f"{INSTALL_HINT}") from None  # fmt: skip
    return ray


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[ModuleType]:
    """Use the Ray this process is already connected to; else connect to `address` ("auto", "ray://...",
    "host:port") or, when None, start a local one (no dashboard). A Ray started here is shut down on exit;
    one that was already running is left alone."""
    ray = require_ray()
    started = False
    if not ray.is_initialized():
        kwargs: dict = {"include_dashboard": False, "log_to_driver": True}
        if address is None:
            kwargs["num_cpus"] = num_cpus
        else:
            kwargs["address"] = address
        try:
            ray.init(**kwargs)
        except ConnectionError as e:  # no cluster at that address: a runtime failure, said plainly
            raise RuntimeError(f"cannot connect to the Ray cluster at {address!r}: {e}") from None
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()
