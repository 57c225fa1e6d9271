"""`segment_dataset`: segment an image collection on a Ray cluster with Ray Data.

Pipeline: list the inputs on the driver (files, folders, globs; output names exactly as `unet-fast
segment` gives them) -> skip those a previous run finished with the same weights -> `from_items` ->
`map_batches(SegmentPredictor, concurrency=workers)`: an actor pool, each actor holding one Segmenter
(its FusedUNet loaded from the engine file the driver built once: distributed/engines.py; torch threads = the
actor's CPUs) that reads, segments and writes per input ->
rows stream back to the driver, which draws the progress bar and writes the Parquet manifest.

Reading happens inside the actor, not in a separate Ray Data stage: a decoded whole-slide image never
crosses the object store, and an unreadable file is caught where its error row is made.
Outputs are written by the workers, so `out_dir` (and the inputs) must be on a file system every node
sees (NFS, a cluster volume); on one machine that is any folder.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from unet_fast.distributed import manifest
from unet_fast.distributed.engines import SharedEngine, prepare_engine
from unet_fast.distributed.limits import DEFAULT_MAX_PIXELS
from unet_fast.distributed.ray_env import ray_session, require_ray
from unet_fast.distributed.worker import SegmentOptions, SegmentPredictor, attempts_dir
from unet_fast.inference.batch import collect_images, output_names

PART_ROWS, PART_SECONDS = 256, 5.0  # flush manifest rows to a part file this often
ENGINE_DIR = ".engine"  # in out_dir: the engine file the driver builds once and every actor loads


@dataclass
class SegmentReport:
    """What a `segment_dataset` run did. `failures`: (input, error) per failed input."""

    total: int
    ok: int
    failed: int
    resumed: int  # done by an earlier run (same weights and settings), not redone
    seconds: float
    manifest: Path
    workers: int
    failures: list[tuple[str, str]] = field(default_factory=list)
    engine: str = ""  # how the workers got their engine (built once on the driver and loaded, or why not)
    engine_seconds: float = 0.0  # what preparing it took on the driver


def segment_dataset(inputs: Sequence[str | Path], weights: str | Path, out_dir: str | Path, *,
                    card: str | Path | None = None, address: str | None = None, workers: int | None = None,
                    cpus_per_worker: float = 1, gpus_per_worker: float = 0, batch_size: int = 4,
                    backend: str = "auto", dtype: str = "float32", patch_size: int | None = None,
                    overlap: float = 0.5, overlay: bool = False, alpha: float = 0.5, overwrite: bool = False,
                    max_pixels: int | None = DEFAULT_MAX_PIXELS, max_worker_deaths: int = 2,
                    progress: bool = True, mode: str = "auto", engine: str | Path | None = None,
                    share_engine: bool = True) -> SegmentReport:  # fmt: skip
    """Segment every image in `inputs` (files, folders, glob patterns) with the U-Net `weights` (+ its
    model card, default: the weights' name with `.json`) on Ray; write `<name>_mask.png` (uint8 class
    indices, palette PNG; `<name>_overlay.png` too with `overlay=True`) and `manifest.parquet` to `out_dir`.

    Masks are byte-identical to `unet-fast segment` with the same weights and options (same `Segmenter`,
    same writer). `address`: None starts a local Ray (stopped at the end), "auto" or "ray://host:10001"
    joins a cluster; a Ray this process already joined is used as it is. `workers`: actors (default: the
    cluster's CPUs / `cpus_per_worker`), each with `cpus_per_worker` CPUs and as many torch threads.
    `batch_size`: patches per model call, as in `segment --batch-size`.

    A bad input (unreadable, wrong channel count, more than `max_pixels` pixels or than the worker's memory
    can hold, an output it cannot write, ...) is a failed row with its error; the job goes on. A worker process that dies is restarted by Ray and its batch retried; an
    input on which `max_worker_deaths` processes died is recorded as failed instead of retried again. Rerunning skips
    inputs whose outputs exist for the same weights hash and settings, unless `overwrite=True`.

    The engine is built once, on the driver, and written to `out_dir/.engine/` (engine/artifact.py); every
    actor loads that file instead of compiling again (`engine`: an engine file of yours, e.g. from
    `unet-fast export engine`, used instead; `share_engine=False`: every actor builds its own, as before
    issue 26, for comparison). Each manifest row says how its worker got the engine
    (`engine`: "file", or "built" where the file could not be used) and what the worker took to start.

    Raises FileNotFoundError (missing input, weights or card), ValueError (bad option, bad model card),
    RayMissingError (Ray not installed)."""
    from unet_fast.inference.legend import write_legend
    from unet_fast.inference.masks import mask_labels
    from unet_fast.inference.model_card import load_model
    from unet_fast.inference.segmenter import DTYPES, Segmenter

    start = time.perf_counter()
    require_ray("data")
    images = collect_images([str(p) for p in inputs])
    names = output_names(images)
    weights, out_dir = Path(weights), Path(out_dir)
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {tuple(DTYPES)}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if cpus_per_worker <= 0 or gpus_per_worker < 0:
        raise ValueError(f"cpus_per_worker must be > 0 and gpus_per_worker >= 0, got {cpus_per_worker}, "
                         f"{gpus_per_worker}")  # fmt: skip
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if max_worker_deaths < 1:
        raise ValueError(f"max_worker_deaths must be >= 1, got {max_worker_deaths}")
    if max_pixels is not None and max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1 or None, got {max_pixels}")
    model, model_card = load_model(weights, card)  # bad weights or card fail here, before Ray starts
    # Validates patch size, overlap and batch size with Segmenter's own messages; builds no engine.
    Segmenter(model, model_card, backend="reference", patch_size=patch_size, overlap=overlap,
              batch_size=batch_size, mode=mode)  # fmt: skip
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"out_dir {out_dir} exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)

    options = SegmentOptions(backend, dtype, patch_size, overlap, batch_size, overlay, alpha, mode)
    w_hash = manifest.file_sha256(weights)
    s_hash = manifest.settings_hash(model_card.to_json(), dataclasses.asdict(options))
    listed = [(str(p.resolve()), n) for p, n in zip(images, names, strict=True)]
    previous = {} if overwrite else {(r["input"], r["name"]): r for r in manifest.read_rows(out_dir)}
    rows: dict[tuple[str, str], dict] = {}
    for key in listed:
        old = previous.get(key)
        if old is not None and manifest.reusable(old, out_dir, w_hash, s_hash, overlay):
            rows[key] = {**old, "resumed": True}
    todo = [key for key in listed if key not in rows]
    n_workers = 0
    shared = SharedEngine(None, "", 0.0)
    if todo and share_engine:
        shared = prepare_engine(weights, card, options.segmenter_kwargs(), out_dir / ENGINE_DIR,
                                f"{w_hash[:16]}-{s_hash[:16]}.ufe", engine)  # fmt: skip
    elif todo:
        shared = SharedEngine(None, "every worker builds its own engine (share_engine=False)", 0.0)
    if todo:
        n_workers = _run(todo, rows, out_dir, weights, card, address, workers, cpus_per_worker,
                         gpus_per_worker, options, max_pixels, max_worker_deaths, progress, w_hash, s_hash,
                         shared.path)  # fmt: skip
    for key in todo:  # Ray gave up on these (the worker died on every retry): still one row each
        if key not in rows:
            rows[key] = {"input": key[0], "name": key[1], "status": "failed", "resumed": False,
                         "error": "NoResult: Ray returned no row for this input (it gave up on its batch)",
                         "weights_hash": w_hash,
                         "settings_hash": s_hash}  # fmt: skip
    ordered = [rows[key] for key in listed]
    path = manifest.write_manifest(out_dir, ordered, [label.name for label in mask_labels(model_card)])
    if shared.path is not None and shared.origin != "given":
        shutil.rmtree(out_dir / ENGINE_DIR, ignore_errors=True)  # the run is done: no large hidden file left
    write_legend(model_card, out_dir)  # the same legend.json/png as the single-process `segment`
    failures = [(r["input"], r["error"] or "") for r in ordered if r["status"] != "ok"]
    return SegmentReport(total=len(listed), ok=len(listed) - len(failures), failed=len(failures),
                         resumed=len(listed) - len(todo), seconds=time.perf_counter() - start,
                         manifest=path, workers=n_workers, failures=failures, engine=shared.note,
                         engine_seconds=shared.seconds)  # fmt: skip


def _run(todo, rows, out_dir, weights, card, address, workers, cpus_per_worker, gpus_per_worker, options,
         max_pixels, max_worker_deaths, progress, w_hash, s_hash, engine) -> int:  # fmt: skip
    """Run the Ray Data job over `todo`, filling `rows` as results stream in. Returns the actor count."""
    import json

    from tqdm.auto import tqdm

    with ray_session(address) as ray:
        from ray.data import DataContext

        cpus = float(ray.cluster_resources().get("CPU", 1))
        n_workers = min(len(todo), workers or max(1, int(cpus // cpus_per_worker)))
        ctx = DataContext.get_current()
        saved = (
            ctx.enable_progress_bars,
            ctx.max_errored_blocks,
            getattr(ctx, "print_on_execution_start", True),
        )
        # Our bar counts inputs; Ray's per-operator bars (and its execution-plan banner) would draw over
        # it. A block that fails on every retry must not end the job: its inputs get error rows instead.
        ctx.enable_progress_bars, ctx.max_errored_blocks, ctx.print_on_execution_start = False, -1, False
        # Ray Data's actor pools restart dead actors and retry their batches without limit by default
        # (max_restarts=-1, max_task_retries=-1); SegmentPredictor bounds the retries per input.
        shutil.rmtree(attempts_dir(out_dir), ignore_errors=True)  # markers of an earlier, killed run
        ds = ray.data.from_items([{"input": i, "name": n} for i, n in todo],
                                 override_num_blocks=min(len(todo), 20_000))  # fmt: skip
        ds = ds.map_batches(
            SegmentPredictor, batch_size=1, compute=ray.data.ActorPoolStrategy(size=n_workers),
            num_cpus=cpus_per_worker, num_gpus=gpus_per_worker or None,
            fn_constructor_kwargs={"weights": str(weights), "card": None if card is None else str(card),
                                   "out_dir": str(out_dir), "options": options, "max_pixels": max_pixels,
                                   "threads": max(1, round(cpus_per_worker)), "weights_hash": w_hash,
                                   "settings_hash": s_hash, "max_worker_deaths": max_worker_deaths,
                                   "engine": engine},
        )  # fmt: skip
        bar = tqdm(total=len(todo), unit="img", desc="segment", disable=not progress, file=sys.stderr,
                   dynamic_ncols=True)  # fmt: skip
        pending: list[dict] = []
        part, flushed, failed = manifest.next_part_index(out_dir), time.monotonic(), 0
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for text in batch["row"]:
                    row = {**json.loads(text), "resumed": False}
                    rows[(row["input"], row["name"])] = row
                    pending.append(row)
                    failed += row["status"] != "ok"
                    bar.update(1)
                    bar.set_postfix(failed=failed, refresh=False)
                if len(pending) >= PART_ROWS or time.monotonic() - flushed > PART_SECONDS:
                    manifest.write_part(out_dir, part, pending)
                    part, pending, flushed = part + 1, [], time.monotonic()
        finally:  # also on Ctrl-C: what finished is on disk, so a rerun resumes from it
            manifest.write_part(out_dir, part, pending)
            bar.close()
            shutil.rmtree(attempts_dir(out_dir), ignore_errors=True)
            ctx.enable_progress_bars, ctx.max_errored_blocks, ctx.print_on_execution_start = saved
    return n_workers
