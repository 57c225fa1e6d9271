"""What one Ray Data actor does: hold a `Segmenter` (one FusedUNet, weights loaded once) and, per input,
read -> segment -> write the class-map PNG (+ overlay) exactly as `unet-fast segment` does, returning one
manifest row. Any failure of one input becomes that row's error; the actor keeps going."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unet_fast.distributed.limits import check_pixels

# Test-only fault injection: "<marker folder>|<output name>=<times>[,<name>=<times>...]". An actor that
# meets such an input while fewer than <times> crash markers exist for it adds one and kills its own
# process (os._exit: no cleanup, like an OOM kill or a lost node), so tests can check that Ray restarts
# the actor and retries the batch, and that an input that always crashes ends as a failed row.
CRASH_ENV = "UNET_FAST_TEST_CRASH"


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


def mask_path(out_dir: Path, name: str) -> Path:
    return out_dir / f"{name}_mask.png"  # the names `unet-fast segment` writes


def overlay_path(out_dir: Path, name: str) -> Path:
    return out_dir / f"{name}_overlay.png"


def _write_atomically(write, path: Path) -> None:
    """Write through a temporary name in the same folder and rename: a worker killed mid-write leaves no
    truncated mask behind under the real name. The suffix stays .png (Pillow picks the format by it)."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def segment_one(seg, path: str, name: str, out_dir: Path, options: SegmentOptions,
                max_pixels: int | None) -> dict:  # fmt: skip
    """Segment one input and write its outputs. Returns a manifest row (see manifest.SCHEMA); never raises
    for a bad input: the exception's type and message go into `error`."""
    from unet_fast.inference.image_io import overlay, read_image, write_mask, write_rgb

    start = time.perf_counter()
    row: dict = {"input": path, "name": name, "height": None, "width": None, "channels": None,
                 "class_fractions": None, "status": "failed", "error": None,
                 "mask": None, "overlay": None}  # fmt: skip
    try:
        check_pixels(path, max_pixels)
        image = read_image(path)
        row["height"], row["width"], row["channels"] = (int(v) for v in image.shape)
        mask = seg.segment(image, path)
        palette = seg.card.palette
        _write_atomically(lambda p: write_mask(mask, palette, p), mask_path(out_dir, name))
        row["mask"] = mask_path(out_dir, name).name
        if options.overlay:
            rgb = overlay(image, mask, palette, options.alpha)
            _write_atomically(lambda p: write_rgb(rgb, p), overlay_path(out_dir, name))
            row["overlay"] = overlay_path(out_dir, name).name
        counts = np.bincount(mask.ravel(), minlength=seg.card.num_classes)
        row["class_fractions"] = (counts / mask.size).tolist()
        row["status"] = "ok"
    except Exception as e:  # one bad input is a manifest row, never the end of the job
        row["error"] = f"{type(e).__name__}: {e}"
    row["seconds"] = time.perf_counter() - start
    return row


def _maybe_crash(name: str) -> None:
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    marker_dir, _, targets = spec.partition("|")
    times = dict(t.split("=") for t in targets.split(",") if t)
    if name not in times:
        return
    for i in range(int(times[name])):
        try:  # O_EXCL: each marker is won by exactly one process, so crashes stop after <times>
            os.close(os.open(Path(marker_dir) / f"crashed-{name}-{i}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue
        os._exit(17)


class SegmentPredictor:
    """The callable class of `Dataset.map_batches`: Ray builds one per actor (weights loaded and the engine
    built once), then calls it on batches of {"input", "name"} rows, returning one JSON manifest row each.

    Ray restarts an actor whose process died and retries its batch, without limit (Ray Data's default).
    So that an input which kills the process every time (a native crash, an OOM kill) cannot stall the job
    forever, each input leaves a marker in `<out_dir>/.attempts` while it is being processed; a retry that
    finds `max_worker_deaths` markers of earlier processes records the input as failed instead."""

    def __init__(self, weights: str, card: str | None, out_dir: str, options: SegmentOptions,
                 max_pixels: int | None, threads: int, weights_hash: str, settings_hash: str,
                 max_worker_deaths: int = 2) -> None:  # fmt: skip
        import torch

        from unet_fast.inference.segmenter import Segmenter

        torch.set_num_threads(max(1, threads))  # one intra-op thread per CPU Ray gave this actor
        self.seg = Segmenter.from_files(weights, card, **options.segmenter_kwargs())
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
                _maybe_crash(name)
                row = segment_one(self.seg, path, name, self.out_dir, self.options, self.max_pixels)
                marker.unlink()
            row["weights_hash"], row["settings_hash"] = self.hashes
            row["backend"], row["worker"] = self.seg.runner.backend, self.worker
            rows.append(json.dumps(row))
        # One JSON string per row: rows with and without an error have different null columns, and a
        # string column never makes Ray Data unify Arrow schemas across blocks. The driver types them.
        return {"row": np.array(rows, dtype=object)}


ATTEMPT_SEP = "@"  # never in an output name (those are file stems without a path)


def attempts_dir(out_dir: Path) -> Path:
    return out_dir / ".attempts"
