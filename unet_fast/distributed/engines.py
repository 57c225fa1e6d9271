"""One engine for every worker: the driver builds (or reuses) the engine once and writes it as an engine file
(unet_fast.save); Ray Data actors and Serve replicas load that file (unet_fast.load: no capture, no packing)
instead of each paying optimize() again (seconds per process for unet64; issue 26).

The file goes where every worker can read it: `segment --ray` puts it in the output folder (which must be on
storage every node sees anyway), `serve` in UNET_FAST_CACHE_DIR when set, else in a temporary folder of the
driver's machine (a local Ray; on a cluster set UNET_FAST_CACHE_DIR to shared storage). A worker that cannot
use the file (not there, made from other weights) builds its own engine, and its note says why.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SharedEngine", "engine_folder", "prepare_engine"]


@dataclass(frozen=True)
class SharedEngine:
    """What the driver prepared: `path` of the engine file the workers load (None: none, `note` says why),
    `seconds` it took on the driver, `origin` ("built", "cache": a compile-cache hit, "reused": the file was
    already there for these weights and settings, "given": the caller's file)."""

    path: str | None
    note: str
    seconds: float
    origin: str = ""


def engine_folder(preferred: Path | None = None) -> Path:
    """Where a driver writes the shared engine file: `preferred`, else UNET_FAST_CACHE_DIR, else a temporary
    folder (one machine only)."""
    if preferred is not None:
        return preferred
    from unet_fast.engine.cache import cache_folder

    return cache_folder(None) or Path(tempfile.gettempdir()) / f"unet_fast-engines-{os.getuid()}"


def prepare_engine(weights: str | Path, card: str | Path | None, segmenter_kwargs: dict, folder: Path,
                   name: str, given: str | Path | None = None) -> SharedEngine:  # fmt: skip
    """Build the engine the workers would build (a Segmenter with `segmenter_kwargs`) once, here, and write it
    to `folder/name` (atomically); reuse that file when it is already there for the same model. `given`: an
    engine file the caller made (unet-fast export engine): used as it is. Never raises for an engine that
    cannot be shared: the note says why and the workers build their own, as before."""
    if given is not None:
        return SharedEngine(str(Path(given).resolve()), f"the engine file {given}, loaded by every worker", 0.0,
                            "given")  # fmt: skip
    from unet_fast.engine import EngineFileError, UnsaveableEngine, load, save
    from unet_fast.inference.model_card import load_model
    from unet_fast.inference.segmenter import REFERENCE, Segmenter

    if segmenter_kwargs.get("backend") == REFERENCE:
        return SharedEngine(None, "the reference model runs (no engine to share)", 0.0)
    start = time.perf_counter()
    model, model_card = load_model(weights, card)
    path = folder / name
    if path.is_file():
        try:
            load(path, model=model)
            return SharedEngine(str(path), f"the engine file {path}, made by an earlier run, loaded by every worker",
                                time.perf_counter() - start, "reused")  # fmt: skip
        except (EngineFileError, ValueError, OSError):
            pass  # stale or damaged: built again below and replaced
    seg = Segmenter(model, model_card, **segmenter_kwargs)
    engine = seg.runner.engine
    if engine is None:
        return SharedEngine(None, f"no engine to share ({seg.runner.note})", time.perf_counter() - start)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        save(engine, path)
    except (UnsaveableEngine, OSError) as e:
        return SharedEngine(None, f"the engine could not be shared ({e}); every worker builds its own",
                            time.perf_counter() - start)  # fmt: skip
    took = time.perf_counter() - start
    return SharedEngine(str(path), f"engine {seg.runner.origin} once on the driver in {took:.1f} s ({path}), loaded by "
                        "every worker", took, seg.runner.origin)  # fmt: skip
