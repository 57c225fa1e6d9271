"""The compile cache: `optimize(..., cache_dir=...)` (or UNET_FAST_CACHE_DIR) keeps each engine it compiles as
an engine file (engine/artifact.py) named by a key of everything that decides it, so another process with the
same model loads it instead of compiling (no torch.export, no packing).

The key (sha256 of JSON, `cache_key`) covers: the model (engine/fingerprint.py: its classes' source files and
distributions, its modules' plain attributes, hooks, and the bytes of every parameter, buffer and tensor
attribute: hashed, never exported); the example's rank, channels, dtype and device type; the options that
change the engine (backend, dtype, output, passes, exact, output_memory_format; not max_cached_shapes,
check_finite or cuda_graphs, which are set on the loaded engine); what UNET_FAST_KERNELS forces and the kernel
rows this CPU resolves to; the engine file format; this unet_fast's code (engine/fingerprint.unet_fast_fingerprint)
and the torch and Python versions. The example's N, H, W are not in it: the entry's capture is shape-generic,
and a hit whose capture does not serve the example (its guards fail there) captures again from the model, as
optimize would. What the key can miss is listed in engine/fingerprint.py and docs/engine_files.md.

Writers: each writes a temporary file and os.replace()s it (engine_file.write_file): two processes filling one
entry both succeed and a reader sees a whole file. A stale or corrupt entry (truncated, flipped bytes, a file
of another format, a key that does not match its name) fails to load with EngineFileError; it is compiled
again and replaced, and the report's `cache` record says why. An engine that cannot be saved (Python code in
it) is compiled and returned, not cached, with the reason.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from unet_fast.backends import resolve_backend
from unet_fast.engine import artifact
from unet_fast.engine.engine_file import FORMAT_VERSION, EngineFileError
from unet_fast.engine.fingerprint import model_fingerprint, unet_fast_fingerprint
from unet_fast.engine.module import EngineConfig, FusedUNet, check_arguments
from unet_fast.engine.report import CacheRecord
from unet_fast.kernels import registry

__all__ = ["CACHE_ENV", "NotCacheable", "cache_folder", "cache_key", "optimize_cached"]

CACHE_ENV = "UNET_FAST_CACHE_DIR"


class NotCacheable(ValueError):
    """The model cannot be keyed (a class without source, a global hook, an attribute the key cannot describe)."""


def cache_folder(cache_dir: str | os.PathLike | None) -> Path | None:
    """The cache folder: `cache_dir`, else UNET_FAST_CACHE_DIR; None (no cache) when neither is set or the value
    is empty. The folder is created on first write."""
    value = os.fspath(cache_dir) if cache_dir is not None else os.environ.get(CACHE_ENV, "")
    return Path(value).expanduser() if value else None


def cache_key(model: nn.Module, example: Tensor, config: EngineConfig) -> tuple[str, dict[str, Any]]:
    """(key, what it was computed from). Raises NotCacheable with the reason."""
    fp = model_fingerprint(model)
    if fp.code is None:
        raise NotCacheable(fp.why)
    dtype = config.dtype or example.dtype
    device = example.device
    backend, _ = resolve_backend(config.backend, device, dtype)
    registry.load(backend.name)
    choices = registry.Choices.from_env(exact=config.exact)
    context = registry.Context(choices)
    rows = {}
    for fam in sorted({k.family for k in registry.kernels(backend.name) if k.family}):
        rows[fam] = context.row(fam)  # ValueError for a bad forced name: optimize would raise it too
    dev = {"type": device.type}
    if device.type == "cuda":
        dev["name"] = torch.cuda.get_device_name(device)
        dev["capability"] = list(torch.cuda.get_device_capability(device))
    material = {
        "format": FORMAT_VERSION, "unet_fast": artifact.version(), "code": unet_fast_fingerprint(),
        "torch": torch.__version__, "python": list(sys.version_info[:2]),
        "model": {"code": fp.code, "state": fp.state},
        "example": {"rank": example.dim(), "channels": int(example.shape[1]), "dtype": str(example.dtype),
                    "device": dev},
        "config": {"backend": config.backend, "resolved_backend": backend.name, "dtype": str(dtype),
                   "output": config.output, "passes": None if config.passes is None else sorted(config.passes),
                   "exact": config.exact, "output_memory_format": config.output_memory_format},
        "kernels": {"forced": [list(kv) for kv in choices.forced], "rows": rows},
    }  # fmt: skip
    key = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:40]
    return key, material


def _private_copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).to("cpu").eval()


def optimize_cached(model: nn.Module, example: Tensor, config: EngineConfig, folder: Path) -> FusedUNet:
    """optimize() through the cache in `folder` (see the module docstring)."""
    check_arguments(model, example, config)
    t0 = time.perf_counter()
    # A hit keeps a private copy of the model (as optimize does); make it while the key hashes the weights:
    # both release the GIL in their copies and digests, so on two cores the copy costs no wall time (unet64:
    # 0.07 s of a 0.3 s hit). On a miss the copy is dropped (~1% of the compile).
    with ThreadPoolExecutor(1) as pool:
        copying = pool.submit(_private_copy, model)
        try:
            key, material = cache_key(model, example, config)
        except NotCacheable as e:
            key, material, why = "", {}, e
        else:
            why = None
        try:
            source: nn.Module | None = copying.result()
        except Exception:  # speculative: the path that needs the copy makes it again and raises there, as before
            source = None
    if why is not None:
        del source
        fast = FusedUNet(model, example, config)
        fast.__dict__["_cache_record"] = CacheRecord("off", "", "", f"not cached: {why}", time.perf_counter() - t0)
        return fast
    path = folder / f"{key}{artifact.SUFFIX}"
    status, reason = "miss", "no entry"
    if path.exists():
        try:
            fast = artifact._load(path, example.device, model=model, verify=True, config=config, check_model=False,
                                  expect={"cache_key": key}, source=source)  # fmt: skip
            fast._entry(tuple(example.shape))  # the example's plan (captured again if no saved capture serves it)
            fast.__dict__["_cache_record"] = CacheRecord("hit", str(path), key, "", time.perf_counter() - t0)
            return fast
        except EngineFileError as e:
            status, reason = "rebuilt", f"the entry could not be used ({e.problem}); compiled and replaced"
        except FileNotFoundError:
            pass  # removed meanwhile (another process cleaning the cache): a miss
    del source
    spent = time.perf_counter() - t0
    fast = FusedUNet(model, example, config)
    t1 = time.perf_counter()
    fast.__dict__["_save_extra"] = {"cache_key": key, "cache_material": material}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        artifact.save(fast, path)
    except artifact.UnsaveableEngine as e:
        status, reason = "unwritten", str(e)
    except OSError as e:
        status, reason = "unwritten", f"the entry could not be written ({type(e).__name__}: {e})"
    finally:
        fast.__dict__.pop("_save_extra", None)
    fast.__dict__["_cache_record"] = CacheRecord(status, str(path), key, reason, spent + time.perf_counter() - t1)
    return fast

