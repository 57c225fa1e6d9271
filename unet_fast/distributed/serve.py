"""`unet-fast serve` as a library: build the Ray Serve application, or run it until interrupted.

from unet_fast.distributed.serve import build_app
from ray import serve
serve.run(build_app("model.pt", replicas=2, max_batch=8))   # POST http://127.0.0.1:8000/segment
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

from unet_fast.distributed.ray_env import ray_session, require_ray

APP_NAME = "unet_fast"
DEFAULT_MAX_BYTES = 64 << 20  # 64 MiB request bodies
DEFAULT_MAX_PIXELS = 1 << 24  # 4096 x 4096: larger images belong in `segment --ray`, not one request


def build_app(weights: str | Path, card: str | Path | None = None, *, replicas: int = 1, max_batch: int = 8,
              batch_wait_ms: float = 5.0, threads: int = 1, backend: str = "auto", dtype: str = "float32",
              patch_size: int | None = None, overlap: float = 0.5, batch_size: int = 4,
              max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int | None = DEFAULT_MAX_PIXELS,
              mode: str = "auto", engine: str | Path | None = None, engine_dir: str | Path | None = None):  # fmt: skip
    """The Serve application: `replicas` replicas with `threads` CPUs (and torch threads) each, batching up
    to `max_batch` concurrent requests, waiting at most `batch_wait_ms` for a batch to fill. `batch_size`:
    patches per model call. Files are checked here (FileNotFoundError / ValueError), before any replica
    starts. The engine is built once, here, and written to `engine_dir` (default: UNET_FAST_CACHE_DIR, else a
    temporary folder: on a multi-node cluster give a folder every node sees); every replica loads that file
    (`engine`: an engine file of yours instead; distributed/engines.py). Raises RayMissingError without
    ray[serve]."""
    from unet_fast.inference.model_card import load_model
    from unet_fast.inference.segmenter import Segmenter

    require_ray("serve")
    for name, value, low in (("replicas", replicas, 1), ("max_batch", max_batch, 1), ("threads", threads, 1),
                             ("max_bytes", max_bytes, 1)):  # fmt: skip
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")
    if batch_wait_ms < 0:
        raise ValueError(f"batch_wait_ms must be >= 0, got {batch_wait_ms}")
    if max_pixels is not None and max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1 or None, got {max_pixels}")
    model, model_card = load_model(weights, card)
    Segmenter(
        model,
        model_card,
        backend="reference",
        patch_size=patch_size,
        overlap=overlap,
        batch_size=batch_size,
        mode=mode,
    )  # fmt: skip - validates the geometry, builds no engine
    from unet_fast.distributed.serve_app import SegmentDeployment

    kwargs = {"backend": backend, "dtype": dtype, "patch_size": patch_size, "overlap": overlap,
              "batch_size": batch_size, "mode": mode}  # fmt: skip
    import hashlib
    import json

    from unet_fast.distributed.engines import engine_folder, prepare_engine
    from unet_fast.distributed.manifest import file_sha256

    ident = hashlib.sha256(json.dumps({"weights": file_sha256(weights), "card": model_card.to_json(),
                                       "options": kwargs}, sort_keys=True).encode()).hexdigest()[:32]  # fmt: skip
    shared = prepare_engine(weights, card, kwargs, engine_folder(None if engine_dir is None else Path(engine_dir)),
                            f"serve-{ident}.ufe", engine)  # fmt: skip
    kwargs = {**kwargs, "engine": shared.path}
    deployment = SegmentDeployment.options(
        num_replicas=replicas, ray_actor_options={"num_cpus": threads},
        # Serve caps requests in flight per replica; below max_batch no batch could ever fill.
        max_ongoing_requests=max(4 * max_batch, 16),
    )  # fmt: skip
    return deployment.bind(str(Path(weights).resolve()), None if card is None else str(Path(card).resolve()),
                           kwargs, threads, max_batch, batch_wait_ms / 1000, max_bytes, max_pixels)  # fmt: skip


def run_server(app, *, host: str = "127.0.0.1", port: int = 8000, address: str | None = None,
               on_ready: Callable[[str], None] | None = None, stop: Callable[[], bool] | None = None) -> None:  # fmt: skip
    """Start Serve's HTTP proxy on host:port, deploy `app`, and block until Ctrl-C / SIGTERM (or until
    `stop()` returns True). A local Ray started here is shut down after; on a cluster joined with
    `address` (or one this process had already joined), only this application is deleted."""
    own_ray = address is None and not require_ray("serve").is_initialized()
    with ray_session(address):
        from ray import serve

        serve.start(http_options={"host": host, "port": port})
        try:
            serve.run(app, name=APP_NAME, route_prefix="/")
            if on_ready is not None:
                on_ready(f"http://{host}:{port}")
            previous = signal.signal(signal.SIGTERM, _raise_interrupt)
            try:
                while not (stop is not None and stop()):
                    time.sleep(0.2)
            except KeyboardInterrupt:
                pass
            finally:
                signal.signal(signal.SIGTERM, previous)
        finally:
            if own_ray:
                serve.shutdown()
            else:
                serve.delete(APP_NAME)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_PIXELS", "build_app", "run_server"]
