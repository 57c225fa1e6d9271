"""Whole-slide segmentation on Ray: the tiles of one slide spread over an actor pool, the output identical to
the single-process `segment_slide`.

The driver plans the job (`wsi.SlideJob`: the path, the tile geometry, the tissue test, the partial results
folder with its tile store) and lists the tiles not done yet. Ray Data then runs
`from_items(tiles) -> map_batches(SlideTileWorker, compute=ActorPoolStrategy(size=workers))`: each actor
loads the model and the engine file the driver built once (distributed/engines.py), opens the slide and the
tile store, and computes its batches of tiles with the
driver's plan (`SlideJob.run_cores`), writing the class maps straight into the store (positioned writes:
any process, any order) and returning one row per tile. The driver appends finished tiles to the done list
as rows arrive (so an interrupted run resumes, with or without Ray) and writes the pyramid at the end.

A tile computes the same pixels in any actor (same plan, same engine batch shape, a crop's output does not
depend on the other crops of its batch), so the mask is byte-identical to the single-process run. The slide,
the weights and the output folder must be on a file system every node sees.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from unet_fast.distributed.ray_env import ray_session, require_ray

__all__ = ["SlideTileWorker", "segment_slide_ray"]


class SlideTileWorker:
    """The callable class of `map_batches`: one per actor (model loaded and engine built once); called on
    batches of {"core": index} rows, returns {"row": JSON} per tile: {"core", "status": ok | skipped | failed,
    "error"}. A tile that cannot be read is a failed row (the driver stops with its error), not a retry."""

    def __init__(self, slide: str, weights: str, card: str | None, out_dir: str, name: str, settings: Any,
                 plan: Any, segmenter_kwargs: dict, identity: str, threads: int) -> None:  # fmt: skip
        import torch

        from unet_fast.inference.wsi import SlideJob, SlideModel

        torch.set_num_threads(max(1, threads))
        model = SlideModel.from_files(weights, card, analyze=False, **segmenter_kwargs)
        model.identity = identity
        self.job = SlideJob(slide, model, out_dir, name, settings, create=False, plan=plan)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from unet_fast.inference.slide_io import SlideReadError

        indices = [int(i) for i in batch["core"]]
        try:
            rows = [{"core": i, "status": s, "error": None} for i, s in self.job.run_cores(indices)]
        except SlideReadError as e:
            rows = [{"core": i, "status": "failed", "error": str(e)} for i in indices]
        return {"row": np.array([json.dumps(r) for r in rows], dtype=object)}


def segment_slide_ray(slide: str | Path, weights: str | Path, out_dir: str | Path, *, card: str | Path | None = None,
                      name: str | None = None, settings: Any = None, address: str | None = None,
                      workers: int | None = None, cpus_per_worker: float = 1, gpus_per_worker: float = 0,
                      backend: str = "auto", dtype: str = "float32", patch_size: int | None = None,
                      overlap: float = 0.5, progress: bool = True, stop_after: int | None = None,
                      engine: str | Path | None = None):  # fmt: skip
    """Segment one slide on Ray (see the module docstring); the same outputs, metadata and resume as
    `wsi.segment_slide`. `workers` actors of `cpus_per_worker` CPUs (torch threads) each; `address` as in
    `segment_dataset`. The engine is built once on the driver and every actor loads its file (`engine`: an
    engine file of yours instead; distributed/engines.py). Returns the SlideReport (None when `stop_after`
    tiles were run and others remain).
    Raises SlideReadError (a tile that cannot be read; the partial results stay), FileNotFoundError,
    ValueError, RayMissingError."""
    from tqdm.auto import tqdm

    from unet_fast.inference.model_card import load_model
    from unet_fast.inference.slide_io import SlideReadError
    from unet_fast.inference.wsi import SlideJob, SlideModel, SlideSettings, model_identity

    start = time.perf_counter()
    require_ray("data")
    settings = settings or SlideSettings()
    kwargs = {"backend": backend, "dtype": dtype, "patch_size": patch_size, "overlap": overlap,
              "batch_size": settings.batch_size}  # fmt: skip
    # the driver plans on the reference model (no engine build here): the plan does not depend on the backend
    model = SlideModel.from_files(weights, card, **{**kwargs, "backend": "reference", "dtype": "float32"})
    ident = model_identity(weights, load_model(weights, card)[1].to_json(), kwargs)  # what the workers run
    model.identity = ident
    job = SlideJob(slide, model, out_dir, name, settings)
    todo = job.pending()
    resumed = len(job.cores) - len(todo)
    if stop_after is not None:
        todo = todo[:stop_after]
    computed, failures = 0, []
    shared = None
    if todo:
        from unet_fast.distributed.engines import prepare_engine

        shared = prepare_engine(weights, card, kwargs, Path(out_dir) / ".engine", f"{ident[:32]}.ufe", engine)
        worker_kwargs = {**kwargs, "engine": shared.path}  # not in `ident`: how the engine arrives changes no pixel
        with ray_session(address) as ray:
            from ray.data import DataContext

            cpus = float(ray.cluster_resources().get("CPU", 1))
            per_call = settings.batch_size * 2 if job.strategy == "exact" else 1
            n_workers = max(1, min(workers or int(cpus // cpus_per_worker), -(-len(todo) // per_call)))
            ctx = DataContext.get_current()
            saved = (ctx.enable_progress_bars, getattr(ctx, "print_on_execution_start", True))
            ctx.enable_progress_bars, ctx.print_on_execution_start = False, False
            ds = ray.data.from_items([{"core": i} for i in todo], override_num_blocks=min(len(todo), 2000))
            ds = ds.map_batches(
                SlideTileWorker, batch_size=per_call, compute=ray.data.ActorPoolStrategy(size=n_workers),
                num_cpus=cpus_per_worker, num_gpus=gpus_per_worker or None,
                fn_constructor_kwargs={"slide": str(Path(slide).resolve()), "weights": str(Path(weights).resolve()),
                                       "card": None if card is None else str(Path(card).resolve()),
                                       "out_dir": str(Path(out_dir).resolve()), "name": job.name,
                                       "settings": settings, "plan": job.plan, "segmenter_kwargs": worker_kwargs,
                                       "identity": ident, "threads": max(1, round(cpus_per_worker))},
            )  # fmt: skip
            area = {c.index: (c.oy1 - c.oy0) * (c.ox1 - c.ox0) / 1e6 for c in job.cores}
            bar = tqdm(total=round(job.total_mpx(), 3), initial=round(job.total_mpx() - job.total_mpx(job.pending()), 3),
                       unit="Mpx", desc=f"{job.name} (ray x{n_workers})", disable=not progress, file=sys.stderr,
                       dynamic_ncols=True)  # fmt: skip
            try:
                for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                    rows = [json.loads(t) for t in batch["row"]]
                    ok = [(r["core"], r["status"]) for r in rows if r["status"] != "failed"]
                    failures += [r["error"] for r in rows if r["status"] == "failed"]
                    job.record(ok)
                    computed += sum(1 for _, s in ok if s == "ok")
                    bar.update(sum(area[i] for i, _ in ok))
            finally:
                bar.close()
                ctx.enable_progress_bars, ctx.print_on_execution_start = saved
    try:
        if failures:
            raise SlideReadError(
                failures[0] + (f" (and {len(failures) - 1} more tiles failed)" if len(failures) > 1 else "")
            )
        if stop_after is not None and job.pending():
            return None
        return job.finish(time.perf_counter() - start, computed, resumed, job.total_mpx(todo))
    finally:
        job.close()
        with contextlib.suppress(Exception):
            job.slide.close()
        if shared is not None and shared.path is not None and shared.origin != "given":
            import shutil

            shutil.rmtree(Path(out_dir) / ".engine", ignore_errors=True)
