"""What one Ray Data actor does: hold a `Segmenter` (one FusedUNet, loaded from the driver's engine file, or
built once where there is none) and, per input,
read -> segment -> write the mask (+ overlay) with `inference.batch.segment_file`, exactly as `unet-fast
segment` does, returning one manifest row. Any failure of one input becomes that row's error; the actor
keeps going."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unet_fast.inference.batch import segment_file


@dataclass(frozen=True)
class SegmentOptions:
    """Everything that decides the bytes of a mask; hashed into the manifest's `settings_hash`."""

    backend: str = "auto"
    dtype: str = "float32"
    patch_size: int | None = None
    overlap: float = 0.5
    batch_size: int = 4  # patches per model call
    overlay: bool = False
    alpha: float = 0.5
    mode: str = "auto"  # whole image / exact tiles / blended window (Segmenter's `mode`)

    def segmenter_kwargs(self) -> dict:
        return {"backend": self.backend, "dtype": self.dtype, "patch_size": self.patch_size,
                "overlap": self.overlap, "batch_size": self.batch_size, "mode": self.mode}  # fmt: skip


def segment_one(seg, path: str, name: str, out_dir: Path, options: SegmentOptions,
                max_pixels: int | None) -> dict:  # fmt: skip
    """Segment one input and write its outputs. Returns a manifest row (see manifest.schema); never raises
    for a bad input: the exception's type and message go into `error`."""
    r = segment_file(seg, path, name, out_dir, overlay_image=options.overlay, alpha=options.alpha,
                     max_pixels=max_pixels)  # fmt: skip
    return {"input": path, "name": name, "height": r.height, "width": r.width, "channels": r.channels,
            "class_fractions": r.class_fractions, "status": "ok" if r.ok else "failed", "error": r.error,
            "mask": r.mask.name if r.mask else None, "overlay": r.overlay.name if r.overlay else None,
            "seconds": r.seconds}  # fmt: skip


class SegmentPredictor:
    """The callable class of `Dataset.map_batches`: Ray builds one per actor (weights loaded and the engine
    built once), then calls it on batches of {"input", "name"} rows, returning one JSON manifest row each.

    Ray restarts an actor whose process died and retries its batch, without limit (Ray Data's default).
    So that an input which kills the process every time (a native crash, an OOM kill) cannot stall the job
    forever, each input leaves a marker in `<out_dir>/.attempts` while it is being processed; a retry that
    finds `max_worker_deaths` markers of earlier processes records the input as failed instead."""

    def __init__(self, weights: str, card: str | None, out_dir: str, options: SegmentOptions,
                 max_pixels: int | None, threads: int, weights_hash: str, settings_hash: str,
                 max_worker_deaths: int = 2, engine: str | None = None) -> None:  # fmt: skip
        import time

        import torch

        from unet_fast.inference.segmenter import Segmenter

        start = time.perf_counter()
        torch.set_num_threads(max(1, threads))  # one intra-op thread per CPU Ray gave this actor
        # `engine`: the file the driver wrote (distributed/engines.py): loaded, not built again per actor
        self.seg = Segmenter.from_files(weights, card, engine=engine, **options.segmenter_kwargs())
        self.startup_s = time.perf_counter() - start  # model, card and engine: what this actor paid to start
        self.out_dir, self.options, self.max_pixels = Path(out_dir), options, max_pixels
        self.hashes = (weights_hash, settings_hash)
        self.max_worker_deaths = max_worker_deaths
        self.worker = f"{os.uname().nodename}:{os.getpid()}"
        self.attempts = attempts_dir(self.out_dir)
        self.attempts.mkdir(exist_ok=True)
        self.calls = 0

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = []
        for path, name in zip(batch["input"], batch["name"], strict=True):
            path, name = str(path), str(name)
            deaths = sum(m.name.rpartition(ATTEMPT_SEP)[0] == name for m in self.attempts.iterdir())
            if deaths >= self.max_worker_deaths:
                row = {"input": path, "name": name, "status": "failed",
                       "error": f"WorkerDied: the worker process died {deaths} times on this input"}  # fmt: skip
            else:
                self.calls += 1
                marker = self.attempts / f"{name}{ATTEMPT_SEP}{os.getpid()}-{self.calls}"
                marker.touch()
                row = self.segment(path, name)
                marker.unlink()
            row["weights_hash"], row["settings_hash"] = self.hashes
            row["backend"], row["worker"] = self.seg.runner.backend, self.worker
            row["engine"], row["worker_startup_s"] = self.seg.runner.origin or "reference", self.startup_s
            rows.append(json.dumps(row))
        # One JSON string per row: rows with and without an error have different null columns, and a
        # string column never makes Ray Data unify Arrow schemas across blocks. The driver types them.
        return {"row": np.array(rows, dtype=object)}

    def segment(self, path: str, name: str) -> dict:
        """One input's manifest row, while its attempt marker exists (a subclass that kills the process
        here is how the tests play an OOM kill: tests/distributed/distributed_helpers.py)."""
        return segment_one(self.seg, path, name, self.out_dir, self.options, self.max_pixels)


ATTEMPT_SEP = "@"  # never in an output name (those are file stems without a path)


def attempts_dir(out_dir: Path) -> Path:
    return out_dir / ".attempts"
