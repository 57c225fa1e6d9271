"""Whole-slide segmentation: read a slide region by region, run tiles in batches, write a pyramidal BigTIFF,
in memory bounded by the tile batch whatever the slide's size; resumable; the same on Ray.

    from unet_fast.inference.wsi import SlideModel, segment_slide
    report = segment_slide("slide.tif", SlideModel.from_files("model.pt"), "masks/")
    print(report.mask, report.strategy, report.mpx_per_s)

Pipeline (`SlideJob`):

1. Open the slide (`slide_io.open_slide`: tiled TIFF / BigTIFF / OME-TIFF / SVS, .npy, zarr, OpenSlide).
2. Decide the path (`strategy`): **exact** halo tiles when the model is exact under tiling at this size
   (`halo.TilingAnalysis`: each output pixel equals whole-image inference up to rounding), else **blended**
   Gaussian windows on the global window grid `sliding_window_inference` would use for the whole image (a
   tile gathers exactly the windows that cover it and blends them in the same order, so the result is that of
   the in-memory blended path, whatever the tiling), with the reason recorded.
3. Cut the output into cores of `core` x `core` pixels (multiples of the output's TIFF tile). Per batch of
   cores: read each core's crop (core + halo, or the union of its windows), normalise it like the model card
   says, run the engine on a fixed batch shape, write the class map (argmax; uint8) of each core into a tile
   store; with `tissue_threshold`, cores without foreground at a low pyramid level are written as class 0
   without running the model.
4. When every core is done: write `<name>_mask.ome.tif` (tiled, deflate, pyramid in SubIFDs; probabilities as
   `<name>_probabilities.ome.tif`, uint8 = round(255 p), one plane per class, with `probabilities=True`) and
   then `<name>_wsi.json` (what ran, why, the geometry, the skipped tiles, timings). The JSON is written
   last: a mask without it is not claimed complete.

Resume: results in progress live in `<out>/.<name>.wsi-partial/` (the tile store and `done.txt`, one line per
finished core, appended after its pixels are synced to disk). A rerun with the same slide, model and settings
skips the cores listed there; other settings start over. Ray (`unet_fast.distributed.wsi_ray`) runs the
same `SlideJob.run_cores` in actors writing into the same store, so the output is the single process's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from unet_fast.inference.halo import NotExact, TilingAnalysis, TilingGeometry
from unet_fast.inference.image_io import match_channels, normalize, to_unit_range
from unet_fast.inference.masks import mask_kind, threshold
from unet_fast.inference.slide_io import Slide, TileStore, open_slide, write_pyramid
from unet_fast.inference.sliding_window import gaussian_importance_map, plan_windows
from unet_fast.inference.tissue import TissueTest, make_tissue_test

__all__ = [
    "SlideJob",
    "SlideModel",
    "SlidePlan",
    "SlideReport",
    "SlideSettings",
    "class_map",
    "segment_slide",
]

FORMAT = "unet_fast.wsi/1"
DONE = "done.txt"
JOB = "job.json"


def class_map(probs: Tensor, head: str = "softmax") -> Tensor:
    """[B, K, H, W] model outputs -> uint8 [B, H, W] masks by the head's rule (inference/masks.py, as every
    other path): argmax over classes; one sigmoid / logit channel thresholded at 0.5 / 0; a multi-label
    sigmoid as label bits."""
    kind, cut = mask_kind(head, int(probs.shape[1])), threshold(head)
    if kind == "classes":
        return probs.max(1).indices.to(torch.uint8)  # = argmax(1), 20x faster on CPU (masks.to_mask)
    if kind == "binary":
        return (probs[:, 0] > cut).to(torch.uint8)
    bits = torch.zeros((probs.shape[0], *probs.shape[2:]), dtype=torch.uint8)
    for k in range(probs.shape[1]):
        bits |= (probs[:, k] > cut).to(torch.uint8) << k
    return bits


@dataclass
class SlideModel:
    """What the slide path needs from a trained model: `predict` ([B, C, h, w] normalised -> [B, K, h, w]),
    the card's normalisation, classes and head, the exactness analysis, and for blended windows the patch,
    overlap and batch size."""

    predict: Callable[[Tensor], Tensor]
    in_channels: int
    num_classes: int
    mean: Sequence[float]
    std: Sequence[float]
    class_names: list[str]
    head: str = "softmax"
    analysis: TilingAnalysis | None = None
    patch: int = 128
    overlap: float = 0.5
    note: str = ""  # what runs (engine / backend), for logs
    identity: str = ""  # a hash of the weights and card: part of the resume key

    @classmethod
    def from_segmenter(cls, seg: Any, identity: str = "", analyze: bool = True) -> SlideModel:
        """From a `Segmenter` (its runner, card, patch and overlap). The tiling analysis reuses the engine's
        capture when the runner holds one (`runner.engine`), else captures the model once; `analyze=False`
        skips it (a Ray worker runs a plan the driver made). `identity` (the resume key's model part) defaults
        to a hash of the card, the weights and the backend."""
        card = seg.card
        if not identity:
            h = hashlib.sha256(json.dumps(card.to_json(), sort_keys=True).encode())
            for k, v in seg.model.state_dict().items():
                h.update(k.encode())
                h.update(v.detach().cpu().contiguous().numpy().tobytes())
            h.update(seg.runner.backend.encode())
            identity = h.hexdigest()[:32]
        analysis, note = None, ""
        if analyze:
            fused = getattr(seg.runner, "engine", None)
            try:
                if fused is not None:
                    analysis = TilingAnalysis.from_fused(fused)
                else:
                    example = torch.zeros(1, card.in_channels, seg.patch, seg.patch)
                    analysis = TilingAnalysis.from_model(seg.model, example)
            except Exception as e:  # no capture: blended windows only, and say why
                note = f"; no exact tiles ({type(e).__name__}: {e})"
        return cls(seg.runner.predict, card.in_channels, card.num_classes, card.mean, card.std,
                   list(card.class_names), str(card.config.get("head", "softmax")), analysis, seg.patch,
                   seg.overlap, seg.runner.note + note, identity)  # fmt: skip

    @classmethod
    def from_files(cls, weights: str | Path, card: str | Path | None = None, analyze: bool = True,
                   **segmenter_kwargs: Any) -> SlideModel:  # fmt: skip
        """Load weights + card into a `Segmenter` (`segmenter_kwargs`: backend, dtype, patch_size, overlap,
        batch_size) and wrap it. The identity hashes the weights file, the card and the options."""
        from unet_fast.inference.segmenter import Segmenter

        seg = Segmenter.from_files(weights, card, **segmenter_kwargs)
        return cls.from_segmenter(seg, model_identity(weights, seg.card.to_json(), segmenter_kwargs), analyze)

    def prepare(self, raw: np.ndarray, name: str) -> Tensor:
        """Raw samples [h, w, C] (file dtype) -> normalised float32 [C, h, w], as `Segmenter.prepare`."""
        unit = to_unit_range(raw, name)
        return torch.from_numpy(normalize(match_channels(unit, self.in_channels, name), self.mean, self.std))


@dataclass(frozen=True)
class SlideSettings:
    """Everything that decides the output's bytes (hashed into the resume key)."""

    mode: str = "auto"  # auto (exact where the model allows it, else blended) | exact | blended
    core: int = 512  # output pixels per tile side (a multiple of `store_tile`)
    batch_size: int = 4  # crops per model call (the engine's batch shape)
    store_tile: int = 256  # the output TIFF's tile
    probabilities: bool = False
    tissue_threshold: float | None = None  # None: no background skipping
    tissue_min_fraction: float = 0.0
    background: tuple[float, ...] | None = None

    def check(self) -> None:
        if self.mode not in ("auto", "exact", "blended"):
            raise ValueError(f"mode must be auto, exact or blended, got {self.mode!r}")
        if self.store_tile < 16 or self.store_tile % 16:
            raise ValueError(f"the output tile must be a multiple of 16 (TIFF), got {self.store_tile}")
        if self.core < self.store_tile or self.core % self.store_tile:
            raise ValueError(
                f"the tile core ({self.core}) must be a multiple of the output tile ({self.store_tile})"
            )
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")


@dataclass
class SlideReport:
    """What a `segment_slide` run did (also written as `<name>_wsi.json`)."""

    slide: str
    mask: Path
    metadata: Path
    probabilities: Path | None
    strategy: str  # exact | blended
    reason: str
    shape: tuple[int, int]
    cores: int
    computed: int  # cores run through the model in this run
    skipped: int  # cores written as background by the tissue test (this run and earlier ones)
    resumed: int  # cores done by an earlier, interrupted run
    seconds: float
    mpx_per_s: float  # output megapixels of this run's cores per second (computed + skipped)
    levels: list[tuple[int, int]] = field(default_factory=list)


@dataclass(frozen=True)
class SlidePlan:
    """What a job decided (a driver hands it to workers, which then compute exactly its cores): the path,
    why, the exact-tile geometry and the tissue test."""

    strategy: str  # exact | blended
    reason: str
    geometry: TilingGeometry | None
    tissue: TissueTest | None


@dataclass(frozen=True)
class _Core:
    index: int
    oy0: int
    oy1: int
    ox0: int
    ox1: int
    crop: tuple[int, int, int, int] | None  # exact: y, x, h, w of the input crop


class SlideJob:
    """One slide, one model, one set of settings: the plan, the partial results and the final files."""

    def __init__(self, slide: str | Path | Slide, model: SlideModel, out_dir: str | Path, name: str | None = None,
                 settings: SlideSettings | None = None, *, create: bool = True,
                 plan: SlidePlan | None = None) -> None:  # fmt: skip
        self.settings = settings or SlideSettings()
        self.settings.check()
        self.slide = slide if not isinstance(slide, (str, Path)) else open_slide(slide)
        self.model = model
        self.name = name or _stem(Path(self.slide.path))
        self.out_dir = Path(out_dir)
        h, w, _ = self.slide.shape
        self.work = self.out_dir / f".{self.name}.wsi-partial"
        # `plan`: what a driver decided, for workers that run its cores
        if plan is not None:
            self.strategy, self.reason, self.geometry = plan.strategy, plan.reason, plan.geometry
        else:
            self.strategy, self.reason, self.geometry = self._decide(h, w)
        self.out_shape = self.geometry.out_size if self.geometry is not None else (h, w)
        self.cores = self._cores()
        self.tissue: TissueTest | None = plan.tissue if plan is not None else None
        if plan is None and self.settings.tissue_threshold is not None:
            self.tissue = make_tissue_test(self.slide, self.settings.core, self.settings.tissue_threshold,
                                           self.settings.tissue_min_fraction, self.settings.background)  # fmt: skip
        self.key = self._key()
        if create:
            self._open_work()
        else:  # a worker: the driver made the partial results; open them
            self._open_stores(fresh=False)

    @property
    def plan(self) -> SlidePlan:
        return SlidePlan(self.strategy, self.reason, self.geometry, self.tissue)

    # -- planning ------------------------------------------------------------------------------------------
    def _decide(self, h: int, w: int) -> tuple[str, str, TilingGeometry | None]:
        mode, an = self.settings.mode, self.model.analysis
        if mode == "blended":
            return "blended", "blended windows (asked for)", None
        if an is None:
            if mode == "exact":
                raise NotExact("no capture of the model to derive exact tiles from")
            return "blended", "blended windows (no capture of the model to derive exact tiles from)", None
        geo = an.geometry(h, w, self.settings.core)
        if geo.exact:
            return "exact", geo.describe(), geo
        if mode == "exact":
            raise NotExact(geo.reason)
        return "blended", f"blended windows (exact tiles refused: {geo.reason})", None

    def _cores(self) -> list[_Core]:
        oh, ow = self.out_shape
        core = self.settings.core
        if self.strategy == "exact":
            assert self.geometry is not None and self.geometry.grid is not None
            grid = self.geometry.grid
            return [_Core(k, b.out[0], b.out[1], b.out[2], b.out[3], (b.y, b.x, b.h, b.w))
                    for k, b in enumerate(grid.boxes())]  # fmt: skip
        h, w, _ = self.slide.shape
        p = self.model.patch
        if h < p or w < p:
            raise ValueError(f"{self.slide.path}: {h}x{w} is smaller than the {p}-pixel patch of the blended windows "
                             "along one side; segment it as an ordinary image")  # fmt: skip
        boxes = [(y, x) for y in range(0, oh, core) for x in range(0, ow, core)]
        return [_Core(k, y, min(oh, y + core), x, min(ow, x + core), None) for k, (y, x) in enumerate(boxes)]

    def _key(self) -> dict:
        st = os.stat(self.slide.path) if os.path.exists(self.slide.path) else None
        return {"format": FORMAT, "slide": os.path.abspath(self.slide.path), "slide_shape": list(self.slide.shape),
                "slide_bytes": st.st_size if st else None, "slide_mtime_ns": st.st_mtime_ns if st else None,
                "model": self.model.identity, "settings": _jsonable(dataclasses.asdict(self.settings)),
                "strategy": self.strategy, "cores": len(self.cores),
                "tissue": self.tissue.to_json() if self.tissue else None}  # fmt: skip

    # -- partial results -----------------------------------------------------------------------------------
    def _open_work(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        job = self.work / JOB
        fresh = True
        if job.is_file():
            try:
                fresh = json.loads(job.read_text()) != self.key
            except (OSError, json.JSONDecodeError):
                fresh = True
        if fresh and self.work.exists():
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True, exist_ok=True)
        self._open_stores(fresh)
        if fresh:
            (self.work / DONE).write_text("")
            tmp = job.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.key, indent=1))
            os.replace(tmp, job)

    def _open_stores(self, fresh: bool) -> None:
        oh, ow = self.out_shape
        t = self.settings.store_tile
        self.mask_store = TileStore(self.work / "mask.bin", (oh, ow), 1, np.uint8, t, create=fresh)
        self.prob_store = (TileStore(self.work / "probabilities.bin", (oh, ow), self.model.num_classes, np.uint8, t,
                                     create=fresh) if self.settings.probabilities else None)  # fmt: skip

    def done(self) -> dict[int, str]:
        """Finished cores from `done.txt`: index -> "ok" | "skipped" (a torn last line is ignored)."""
        out: dict[int, str] = {}
        path = self.work / DONE
        if not path.is_file():
            return out
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0].isdigit() and parts[1] in ("ok", "skipped"):
                out[int(parts[0])] = parts[1]
        return out

    def record(self, rows: Iterable[tuple[int, str]]) -> None:
        """Append finished cores to done.txt (after their pixels were synced by whoever wrote them)."""
        text = "".join(f"{i} {status}\n" for i, status in rows)
        if not text:
            return
        with open(self.work / DONE, "a") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    def pending(self) -> list[int]:
        done = self.done()
        return [c.index for c in self.cores if c.index not in done]

    # -- running -------------------------------------------------------------------------------------------
    def run_cores(self, indices: Sequence[int], on_done: Callable[[list[tuple[int, str]]], None] | None = None,
                  progress: Callable[[float], None] | None = None) -> list[tuple[int, str]]:  # fmt: skip
        """Compute the cores `indices` and write them to the store; `on_done(rows)` after each batch is on disk
        (rows: (index, "ok" | "skipped")); `progress(mpx)` with the output megapixels finished. Returns the rows.
        Raises SlideReadError naming the tile that cannot be read (nothing of that batch is recorded)."""
        rows: list[tuple[int, str]] = []
        todo = [self.cores[i] for i in indices]
        run, skip = [], []
        for c in todo:
            if self.tissue is not None and self.tissue.fraction(self.slide, c.oy0, c.oy1, c.ox0, c.ox1) <= (
                    self.tissue.min_fraction):  # fmt: skip
                skip.append(c)
            else:
                run.append(c)
        if skip:  # nothing to write: an unwritten store block reads as zeros (class 0)
            done = [(c.index, "skipped") for c in skip]
            rows += done
            if on_done is not None:
                on_done(done)
            if progress is not None:
                progress(sum(_area(c) for c in skip) / 1e6)
        batches = self._batches(run)
        with ThreadPoolExecutor(1) as pool:  # read / decode the next batch while the model runs this one
            ahead = pool.submit(self._load, batches[0]) if batches else None
            for k, batch in enumerate(batches):
                assert ahead is not None
                loaded = ahead.result()
                ahead = pool.submit(self._load, batches[k + 1]) if k + 1 < len(batches) else None
                self._compute(batch, loaded)
                self.mask_store.sync()
                if self.prob_store is not None:
                    self.prob_store.sync()
                done = [(c.index, "ok") for c in batch]
                rows += done
                if on_done is not None:
                    on_done(done)
                if progress is not None:
                    progress(sum(_area(c) for c in batch) / 1e6)
        return rows

    def _batches(self, cores: list[_Core]) -> list[list[_Core]]:
        if self.strategy == "exact":
            b = self.settings.batch_size
            return [cores[i : i + b] for i in range(0, len(cores), b)]
        return [[c] for c in cores]  # blended: one core per batch of windows

    def _load(self, batch: list[_Core]) -> list[tuple[np.ndarray, tuple[int, int]]]:
        out = []
        for c in batch:
            if c.crop is not None:
                y, x, h, w = c.crop
            else:
                y, x, h, w = self._window_region(c)
            out.append((self.slide.read(y, x, h, w), (y, x)))
        return out

    @torch.no_grad()
    def _compute(self, batch: list[_Core], loaded: list[tuple[np.ndarray, tuple[int, int]]]) -> None:
        if self.strategy == "exact":
            probs = self._exact(batch, loaded)
        else:
            probs = [self._blended(batch[0], *loaded[0])]
        for c, p in zip(batch, probs, strict=True):
            classes = class_map(p[None], self.model.head)[0].numpy()
            self.mask_store.write(c.oy0, c.ox0, classes)
            if self.prob_store is not None:
                q = (p.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
                self.prob_store.write(c.oy0, c.ox0, q)

    def _exact(self, batch: list[_Core], loaded) -> list[Tensor]:
        crops = torch.stack([self.model.prepare(raw, self.slide.path) for raw, _ in loaded])
        b = self.settings.batch_size
        if crops.shape[0] < b:  # one engine shape: pad the last batch
            crops = torch.cat([crops, crops.new_zeros((b - crops.shape[0], *crops.shape[1:]))])
        pred = self.model.predict(crops).float()
        out = []
        for c, p, (_, (y, x)) in zip(batch, pred, loaded, strict=False):
            out.append(p[:, c.oy0 - y : c.oy1 - y, c.ox0 - x : c.ox1 - x].contiguous())
        return out

    # blended: the global window grid of sliding_window_inference, windows gathered per core
    def _windows(self) -> tuple[list[tuple[int, int]], int]:
        if not hasattr(self, "_plan"):
            h, w, _ = self.slide.shape
            p = self.model.patch
            self._plan = plan_windows((h, w), (p, p), self.model.overlap).starts
            self._weight = gaussian_importance_map((p, p))
        return list(self._plan), self.model.patch

    def _core_windows(self, c: _Core) -> list[tuple[int, int]]:
        starts, p = self._windows()
        return [(y, x) for y, x in starts if y < c.oy1 and y + p > c.oy0 and x < c.ox1 and x + p > c.ox0]

    def _window_region(self, c: _Core) -> tuple[int, int, int, int]:
        ws = self._core_windows(c)
        p = self.model.patch
        y0, x0 = min(y for y, _ in ws), min(x for _, x in ws)
        y1, x1 = max(y for y, _ in ws) + p, max(x for _, x in ws) + p
        return y0, x0, y1 - y0, x1 - x0

    def _blended(self, c: _Core, raw: np.ndarray, origin: tuple[int, int]) -> Tensor:
        ws = self._core_windows(c)
        p, b = self.model.patch, self.settings.batch_size
        region = self.model.prepare(raw, self.slide.path)
        oy, ox = origin
        ch, cw = c.oy1 - c.oy0, c.ox1 - c.ox0
        acc: Tensor | None = None
        norm = torch.zeros((ch, cw))
        for i in range(0, len(ws), b):
            chunk = ws[i : i + b]
            patches = torch.stack([region[:, y - oy : y - oy + p, x - ox : x - ox + p] for y, x in chunk])
            if len(chunk) < b:
                patches = torch.cat([patches, patches.new_zeros((b - len(chunk), *patches.shape[1:]))])
            out = self.model.predict(patches).float()[: len(chunk)]
            if acc is None:
                acc = torch.zeros((out.shape[1], ch, cw))
            for (y, x), q in zip(chunk, out, strict=True):
                # the part of window (y, x) inside the core, added in the global window order
                ty0, ty1 = max(y, c.oy0), min(y + p, c.oy1)
                tx0, tx1 = max(x, c.ox0), min(x + p, c.ox1)
                wpart = self._weight[ty0 - y : ty1 - y, tx0 - x : tx1 - x]
                acc[:, ty0 - c.oy0 : ty1 - c.oy0, tx0 - c.ox0 : tx1 - c.ox0] += (
                    q[:, ty0 - y : ty1 - y, tx0 - x : tx1 - x] * wpart
                )
                norm[ty0 - c.oy0 : ty1 - c.oy0, tx0 - c.ox0 : tx1 - c.ox0] += wpart
        assert acc is not None
        return acc / norm

    # -- the end -------------------------------------------------------------------------------------------
    def finish(self, seconds: float, computed: int, resumed: int, progress_mpx: float) -> SlideReport:
        """Write the pyramid(s) and the metadata JSON (last), remove the partial results. Raises RuntimeError
        if a core is not done."""
        done = self.done()
        missing = [c.index for c in self.cores if c.index not in done]
        if missing:
            raise RuntimeError(f"{len(missing)} of {len(self.cores)} tiles are not done (first: {missing[:5]}); "
                               "not writing an incomplete mask")  # fmt: skip
        res = self.slide.resolution_um() if hasattr(self.slide, "resolution_um") else None
        mask_path = self.out_dir / f"{self.name}_mask.ome.tif"
        # OME UUIDs from the resume key: the same slide, model and settings give byte-identical files
        key = json.dumps(self.key, sort_keys=True)
        levels = write_pyramid(mask_path, self.mask_store, resolution_um=res, name=f"{self.name} class map",
                               uuid=str(uuid.uuid5(uuid.NAMESPACE_URL, key + "mask")))  # fmt: skip
        prob_path = None
        if self.prob_store is not None:
            prob_path = self.out_dir / f"{self.name}_probabilities.ome.tif"
            write_pyramid(prob_path, self.prob_store, resolution_um=res, name=f"{self.name} probabilities x255",
                          planar_channels=True, uuid=str(uuid.uuid5(uuid.NAMESPACE_URL, key + "probabilities")))  # fmt: skip
        skipped = sum(1 for v in done.values() if v == "skipped")
        report = SlideReport(self.slide.path, mask_path, self.out_dir / f"{self.name}_wsi.json", prob_path,
                             self.strategy, self.reason, tuple(self.out_shape), len(self.cores), computed, skipped,
                             resumed, seconds, progress_mpx / seconds if seconds > 0 else float("nan"),
                             levels)  # fmt: skip
        meta = {
            "format": FORMAT, "complete": True, "slide": self.slide.path, "slide_format": self.slide.kind,
            "slide_shape": list(self.slide.shape), "output_shape": list(self.out_shape),
            "mask": mask_path.name, "probabilities": prob_path.name if prob_path else None,
            "mask_encoding": "uint8 class index per pixel (legend.json); pyramid levels: 2x nearest subsampling",
            "strategy": self.strategy, "reason": self.reason, "model": self.model.note,
            "model_identity": self.model.identity, "class_names": self.model.class_names,
            "settings": _jsonable(dataclasses.asdict(self.settings)),
            "geometry": None if self.geometry is None else {
                "crop": list(self.geometry.grid.crop_shape) if self.geometry.grid else None,
                "align": list(self.geometry.align), "halo": [list(m) for m in self.geometry.margin],
                "input_px_per_output_px": self.geometry.overhead},
            "tissue": self.tissue.to_json() if self.tissue else None,
            "tiles": {"total": len(self.cores), "computed_this_run": computed, "skipped_as_background": skipped,
                      "done_by_earlier_runs": resumed},
            "levels": [list(s) for s in levels], "seconds": seconds, "mpx_per_s": report.mpx_per_s,
        }  # fmt: skip
        tmp = report.metadata.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(tmp, report.metadata)
        self.close()
        shutil.rmtree(self.work, ignore_errors=True)
        return report

    def close(self) -> None:
        for s in (getattr(self, "mask_store", None), getattr(self, "prob_store", None)):
            if s is not None:
                s.close()

    def total_mpx(self, indices: Iterable[int] | None = None) -> float:
        cores = self.cores if indices is None else [self.cores[i] for i in indices]
        return sum(_area(c) for c in cores) / 1e6


def segment_slide(slide: str | Path, model: SlideModel, out_dir: str | Path, *, name: str | None = None,
                  settings: SlideSettings | None = None, progress: bool = True,
                  stop_after: int | None = None) -> SlideReport | None:  # fmt: skip
    """Segment one slide into `out_dir` (see the module docstring); resumes an interrupted run of the same
    slide, model and settings. Returns the report, or None when `stop_after` (tests: cores to run before
    stopping as if interrupted) left it incomplete. Raises FileNotFoundError, SlideReadError / ValueError
    (bad slide or option; a tile that cannot be read: the partial results stay, nothing is claimed complete),
    NotExact (mode="exact" for a model that is not)."""
    start = time.perf_counter()
    job = SlideJob(slide, model, out_dir, name, settings)
    try:
        todo = job.pending()
        resumed = len(job.cores) - len(todo)
        if stop_after is not None:
            todo = todo[:stop_after]
        bar = _bar(job, resumed, progress)
        try:
            rows = job.run_cores(todo, on_done=job.record, progress=bar.update)
        finally:
            bar.close()
        if stop_after is not None and len(job.pending()):
            return None
        computed = sum(1 for _, s in rows if s == "ok")
        return job.finish(time.perf_counter() - start, computed, resumed, job.total_mpx(todo))
    finally:
        job.close()
        with contextlib.suppress(Exception):
            job.slide.close()


def is_slide(path: str | Path, max_decoded_bytes: int = 1 << 30) -> bool:
    """Whether `segment` should stream `path` tile by tile: a zarr array, an OpenSlide format, a tiled TIFF with
    a pyramid or over `max_decoded_bytes` decoded, an .npy over it, or a PNG / JPEG / BMP over it (which
    `open_slide` then refuses with the formats that stream). Everything else is read whole."""
    from unet_fast.inference import slide_io

    path = Path(path)
    suffix = slide_io._suffix(path)
    if suffix == ".zarr" or suffix in slide_io.OPENSLIDE_SUFFIXES or path.is_dir():
        return True
    try:
        if suffix in slide_io.TIFF_SUFFIXES:
            import tifffile

            with tifffile.TiffFile(path) as t:
                series = t.series[0]
                page = t.pages[0]
                size = series.size * series.dtype.itemsize
                return bool(page.is_tiled and (len(series.levels) > 1 or size > max_decoded_bytes))
        if suffix == ".npy":
            npy = slide_io.NpySlide(path)
            npy.close()
            return npy.dtype.itemsize * math.prod(npy.shape) > max_decoded_bytes
        if suffix in slide_io.DECODED_SUFFIXES:
            size = slide_io.decoded_size(path)
            return size is not None and math.prod(size) > max_decoded_bytes
    except Exception:  # unreadable: the ordinary reader reports what is wrong
        return False
    return False


def _bar(job: SlideJob, resumed: int, enabled: bool):
    """A tqdm bar over output megapixels (rate in Mpx/s), starting at what earlier runs did."""
    from tqdm.auto import tqdm

    done = job.total_mpx([c.index for c in job.cores]) - job.total_mpx(job.pending())
    return tqdm(total=round(job.total_mpx(), 3), initial=round(done, 3), unit="Mpx", desc=job.name,
                disable=not enabled, file=sys.stderr, dynamic_ncols=True,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} Mpx [{elapsed}<{remaining}, "
                "{rate_fmt}]")  # fmt: skip


def _area(c: _Core) -> int:
    return (c.oy1 - c.oy0) * (c.ox1 - c.ox0)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def model_identity(weights: str | Path, card: dict, options: dict) -> str:
    """The resume key's model part: hashes of the weights file, the model card and the options that decide the
    output (backend, dtype, patch, overlap, batch size)."""
    text = json.dumps(card, sort_keys=True) + json.dumps(
        {k: options.get(k) for k in sorted(options)}, default=str
    )
    return _sha256(Path(weights))[:16] + "-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _jsonable(e) for k, e in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(e) for e in v]
    return v
