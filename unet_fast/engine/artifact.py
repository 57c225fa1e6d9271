"""`unet_fast.save(fast, path)` / `unet_fast.load(path, device=...)`: one versioned file holding an engine's
captures (the shape-generic program: graph, size expressions, guards, output structure) and its weights,
both the folded ones every kernel is packed from and the packed ones of the kernels chosen when it was
prepared; no pickle anywhere (engine/engine_file.py: the container; engine/codec.py: the JSON).

Loading runs no capture (no torch.export) and packs nothing the file holds for the kernels that run: the
file's packed weights are used as they are when they were made by this build of the kernels (the packing
fingerprint: unet_fast's kernel sources and CPU variant table), for the same backend, device type and dtype,
and for kernel rows this machine runs. Otherwise (an AVX-512 file on an AVX2-only machine, UNET_FAST_KERNELS
forcing another row at load, `load(device=...)` on another device, a file of another unet_fast) the kernels
chosen here pack from the folded weights, and the report says which and why (`report_data().artifact`).

What is refused, with the reason (`UnsaveableEngine`): an engine holding Python code, which only pickling
could store: a whole-model fallback (the model's export failed, so PyTorch runs the nn.Module itself), a
fallback step calling a custom (non-aten) operator or a Python function, a model returning a namedtuple or a
class of its own. A loaded engine has no model: a shape that no saved capture serves (a guard fails, or the
captures are static) raises CaptureMissingError, unless `load(path, model=model)` gave the model back.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from unet_fast.backends import BackendUnavailable
from unet_fast.backends.weights import WeightStore
from unet_fast.engine.codec import Decoder, Encoder, GuardRejected, Unencodable, check_guard
from unet_fast.engine.compiler import Capture
from unet_fast.engine.engine_file import FORMAT_VERSION, EngineFileError, RawFile, read_file, write_file
from unet_fast.engine.fingerprint import model_fingerprint
from unet_fast.engine.module import EngineConfig, FusedUNet
from unet_fast.engine.report import ArtifactRecord
from unet_fast.graph.capture import check_eval_mode
from unet_fast.graph.symbolic import GuardError, SymbolicGraph
from unet_fast.kernels import registry
from unet_fast.models.unet import UNet, UNetConfig

__all__ = ["SUFFIX", "EngineFileError", "UnsaveableEngine", "load", "packing_fingerprint", "read_header", "save",
           "version"]

SUFFIX = ".ufe"
_FORMATS = ("channels_last",)  # input memory formats whose output formats are probed at save (layout.py)


def version() -> str:
    """unet_fast.__version__ (read from the package, which is always imported before this module: importing
    it here would be an import cycle)."""
    return getattr(sys.modules.get("unet_fast"), "__version__", "unknown")


_PACKAGE = Path(__file__).resolve().parents[1]  # unet_fast/


class UNetSizes:
    """Our UNet's closed-form size rule (UNet.output_size: ValueError naming the nearest valid sizes) without
    the network: what a loaded engine checks an input size with (engine/compiler.check_size does it with the
    model)."""

    def __init__(self, config: UNetConfig) -> None:
        self.config = config

    output_size = UNet.output_size


class UnsaveableEngine(ValueError):
    """An engine that holds Python code (an nn.Module, a Python function, a class of the model's own), which an
    engine file never stores: the message names the step and why."""


# ---------------------------------------------------------------------------------------------------
# Save
# ---------------------------------------------------------------------------------------------------


def save(fast: FusedUNet, path: str | os.PathLike) -> Path:
    """Write `fast` (from optimize or load) to `path` (conventionally `*.ufe`): every capture it holds, its
    folded and packed weights for the kernels it chose, the output memory formats of the model (probed now
    when the model is there), and what made it (versions, backend, dtype, kernel rows, a content hash).
    Atomic: a temporary file, fsync, os.replace. Returns the path.

    Raises UnsaveableEngine (a ValueError) for an engine holding Python code (see the module docstring), and
    OSError when the path cannot be written."""
    if not isinstance(fast, FusedUNet):
        raise TypeError(f"save() takes a FusedUNet (from unet_fast.optimize or load), got {type(fast).__name__}")
    path = Path(path)
    if path.is_dir():  # before the work, and not os.replace's message about a temporary file
        raise IsADirectoryError(f"{path} is a folder: give save() a file name, e.g. {path / ('model' + SUFFIX)}")
    header, storages = _serialize(fast)
    write_file(path, header, storages)
    return path


def _serialize(fast: FusedUNet) -> tuple[dict[str, Any], list[Tensor]]:
    enc = Encoder()
    with fast._lock:
        captures = list(fast._captures)
        formats = dict(fast._formats)
        if fast._source is not None:
            for fin in _FORMATS:  # the model is here now and will not be after load: probe what it returns
                if fin not in formats:
                    formats[fin] = fast._formats[fin] = fast._probe_formats(fin, fast._example_shape)
        caps = []
        for i, cap in enumerate(captures):
            try:
                caps.append(_capture_json(enc, cap, f"capture {i}"))
            except Unencodable as e:
                raise UnsaveableEngine(f"this engine cannot be saved: {e}. Nothing was written; run it from the "
                                       "model (unet_fast.optimize) in each process instead") from None  # fmt: skip
        store = fast._weights
        items, skipped = [], []
        for role, source, prepared in store.entries():
            if not isinstance(source, Tensor):
                skipped.append([role, f"its source is a {type(source).__name__}"])
                continue
            try:
                items.append({"role": role, "source": enc.tensor(source),
                              "packed": enc.packed(prepared, f"the packed weight of {role}")})  # fmt: skip
            except Unencodable as e:
                skipped.append([role, str(e)])  # packed again at load, from the folded weight
        rows = _chosen_rows(store)
    cfg = fast.config
    size_model = None
    model = fast._source if fast._source is not None else fast._size_model
    if isinstance(model, (UNet, UNetSizes)):
        size_model = {"unet": dataclasses.asdict(model.config)}
    fp = model_fingerprint(fast._source) if fast._source is not None else getattr(fast, "_fingerprint", None)
    header = {
        "format": "unet_fast.engine",
        "format_version": FORMAT_VERSION,
        "written": {"unet_fast": version(), "torch": torch.__version__,
                    "python": platform.python_version(), "machine": platform.machine(), "time": time.time()},
        "engine": {
            "config": {"backend": cfg.backend, "dtype": None if cfg.dtype is None else _dtype_name(cfg.dtype),
                       "output": cfg.output, "cuda_graphs": cfg.cuda_graphs, "check_finite": cfg.check_finite,
                       "passes": None if cfg.passes is None else sorted(cfg.passes), "exact": cfg.exact,
                       "max_cached_shapes": cfg.max_cached_shapes,
                       "output_memory_format": cfg.output_memory_format},
            "in_channels": fast.in_channels, "example_shape": list(fast._example_shape),
            "device": str(fast.device), "dtype": _dtype_name(fast.dtype), "backend": fast.backend.name,
            "backend_reason": fast.backend_reason,
            "kernels": {"exact": store.context.choices.exact, "forced": [list(kv) for kv in store.context.choices.forced],
                        "rows": rows},
            "formats": formats, "size_model": size_model,
            "dropped_captures": fast.__dict__.get("_dropped_captures", 0),
        },
        "captures": caps,
        "weights": {"backend": store.backend_name, "device": str(store.device), "dtype": _dtype_name(store.dtype),
                    "packing": packing_fingerprint(store.backend_name), "items": items, "skipped": skipped},
        "model": None if fp is None else {"code": fp.code, "state": fp.state},
    }  # fmt: skip
    extra = fast.__dict__.get("_save_extra")
    if extra:
        header.update(extra)
    return header, enc.storages


def _capture_json(enc: Encoder, cap: Capture, where: str) -> dict[str, Any]:
    g = cap.graph
    return {"graph": enc.graph(g.graph, where), "symbols": [[d, name] for d, name in sorted(g.symbols.items())],
            "guards": list(g.guards), "example_shape": list(g.example_shape), "batch_free": g.batch_free,
            "pass_lines": list(cap.pass_lines), "reason": cap.reason, "dynamic": cap.dynamic,
            "model_output": cap.model_output}  # fmt: skip


def _families(backend: str) -> list[str]:
    return sorted({k.family for k in registry.kernels(backend) if k.family})


def _chosen_rows(store: WeightStore) -> dict[str, str | None]:
    """The CPU-table row of each kernel family the engine's prepared weights use ('cpu': 'avx512'; a bf16
    engine without tile hardware: 'bf16': None)."""
    used = set()
    for role, _, _ in store.entries():
        try:
            used.add(registry.get(role).family)
        except KeyError:
            continue  # "bias", "module": not kernels
    if store.dtype == torch.bfloat16 and store.backend_name == "cpu":
        used.add("bf16")  # which tile backend (or none) decides the kernels even where none packs a weight
    out = {}
    for fam in sorted(used & set(_families(store.backend_name))):
        try:
            out[fam] = store.context.row(fam)
        except ValueError:
            continue
    return out


def _dtype_name(d: torch.dtype) -> str:
    return str(d).replace("torch.", "")


@functools.cache
def packing_fingerprint(backend: str) -> str:
    """sha256 of what decides how `backend`'s kernels pack a weight: this unet_fast's version, the source of its
    kernel modules (unet_fast/kernels, where every pack function lives) and, for the cpu backend, the CPU
    variant table (the blocking the layouts follow, from the compiled extension). Content only (no paths or
    times): the same release packs alike on every machine."""
    registry.load(backend)
    root = _PACKAGE / "kernels"
    h = hashlib.sha256(f"{version()}|{backend}".encode())
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    # kernels/cpu_isa.py (loaded by registry.load above for the cpu backend) imports the extension, which imports
    # the package: importing it from the engine would be an import cycle, so it is read where the registry put it
    isa = sys.modules.get("unet_fast.kernels.cpu_isa")
    if backend == "cpu" and isa is not None:
        h.update(repr(isa.table()).encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------
# Load
# ---------------------------------------------------------------------------------------------------


def read_header(path: str | os.PathLike, *, verify: bool = True) -> dict[str, Any]:
    """The header of an engine file (what wrote it, backend, dtype, kernel rows, captures), checked as load
    checks it. Raises EngineFileError."""
    return read_file(path, verify=verify).header


def load(path: str | os.PathLike | bytes, device: str | torch.device | None = None, *, model: nn.Module | None = None,
         verify: bool = True) -> FusedUNet:  # fmt: skip
    """The engine saved in `path` (a file from `save`, or its bytes), ready to run: no capture, no packing of
    what the file holds (see the module docstring; `report_data().artifact` says what was packed here).

    device: where it runs (default: where it was saved). model: the model it was made from (optional; its
        fingerprint is checked against the file's): a shape no saved capture serves is then captured again,
        as after optimize; without it that shape raises CaptureMissingError.
    verify: check every stored tensor's CRC-32 (default; ~0.15 s per 600 MiB of weights).
    UNET_FAST_KERNELS is read now: a row it forces wins over the file's (the weights are packed again for it).
    Raises EngineFileError (a ValueError) for a truncated, corrupt, foreign, older- or newer-format file, or
    one this unet_fast cannot build; ValueError for a model that is not the file's; BackendUnavailable for a
    device the engine's backend cannot use; FileNotFoundError / OSError."""
    return _load(path, device, model=model, verify=verify)


def _load(path: str | os.PathLike | bytes, device: str | torch.device | None, *, model: nn.Module | None,
          verify: bool, config: EngineConfig | None = None, check_model: bool = True,
          expect: dict[str, Any] | None = None, source: nn.Module | None = None) -> FusedUNet:  # fmt: skip
    """`source`: the private copy of `model` when the caller made it already (the compile cache)."""
    t0 = time.perf_counter()
    raw = read_file(path, verify=verify)
    where = raw.path or "<bytes>"
    h = raw.header
    if expect:
        for k, v in expect.items():
            if h.get(k) != v:
                raise EngineFileError(where, f"its {k} is not the one expected here (a stale or misplaced file)")
    try:
        parts = _decode(raw)
    except EngineFileError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RuntimeError, GuardRejected) as e:
        raise EngineFileError(where, str(e)) from None
    eng = parts["engine"]
    if model is not None:
        check_eval_mode(model)
        if check_model:
            _check_model(model, h.get("model"), where)
        if source is None:
            source = copy.deepcopy(model).to("cpu").eval()
    else:
        source = None
    dev = torch.device(device) if device is not None else torch.device(eng["device"])
    if dev.type == "cuda" and not torch.cuda.is_available():
        asked = f"device={str(device)!r} was asked" if device is not None else f"{where} was saved for {eng['device']}"
        raise ValueError(f"{asked}, and this machine has no CUDA device (torch {torch.__version__}, "
                         "torch.cuda.is_available() is False): load it with device='cpu'")  # fmt: skip
    cfg = config or parts["config"]
    notes: list[str] = []
    preloaded: set[tuple[str, int]] = set()
    kernels_saved = ", ".join(f"{f}={r or 'none'}" for f, r in eng["rows"].items())

    def make_store(backend: str, device: torch.device, dtype: torch.dtype) -> WeightStore:
        choices, pinned = _kernel_choices(backend, eng, notes)  # ValueError for a bad UNET_FAST_KERNELS
        store = WeightStore(backend, device, dtype, cfg.exact, choices=choices)
        store.context = registry.Context(choices, dict(pinned))
        _preload(store, parts, device, notes, preloaded, where)
        return store

    dtype = parts["dtype"]
    try:
        fast = FusedUNet._restore(cfg, parts["captures"], eng["in_channels"], eng["example_shape"], eng["formats"],
                                  source, parts["size_model"], dev, dtype, make_store)  # fmt: skip
    except (BackendUnavailable, EngineFileError):
        raise
    except ValueError as e:
        if "UNET_FAST_KERNELS" in str(e) or source is not None:
            raise
        raise EngineFileError(where, f"the saved program does not build here ({e})") from None
    except (TypeError, KeyError, IndexError, AttributeError, RuntimeError, AssertionError, GuardError) as e:
        raise EngineFileError(where, f"the saved program does not build here ({type(e).__name__}: {e})") from None
    fast.__dict__["_dropped_captures"] = eng.get("dropped_captures", 0)
    fast.__dict__["_fingerprint"] = parts["fingerprint"]
    made = Counter(role for role, src, _ in fast._weights.entries()
                   if isinstance(src, Tensor) and (role, src.data_ptr()) not in preloaded)  # fmt: skip
    written = h.get("written", {})
    fast.__dict__["_artifact"] = ArtifactRecord(
        path=where, format_version=raw.version,
        written_by=f"unet_fast {written.get('unet_fast', '?')}, torch {written.get('torch', '?')}",
        content_sha256=str(h.get("content_sha256", "")), seconds=time.perf_counter() - t0,
        stored=len(preloaded), repacked=tuple(sorted(made.items())),
        reason="; ".join(dict.fromkeys(notes)) if made else "", kernels=kernels_saved, model=source is not None,
    )  # fmt: skip
    return fast


def _check_model(model: nn.Module, saved: Any, where: str) -> None:
    if not isinstance(saved, dict):
        raise ValueError(f"{where} does not record the model it was made from, so load(model=...) cannot check "
                         "the model given; load without it, or optimize from the model")  # fmt: skip
    fp = model_fingerprint(model)
    if fp.state != saved.get("state"):
        raise ValueError(f"the model given is not the one {where} was made from (its weights differ)")
    if fp.code is not None and saved.get("code") is not None and fp.code != saved.get("code"):
        raise ValueError(f"the model given is not the one {where} was made from (its classes' source or "
                         "attributes differ)")  # fmt: skip


def _decode(raw: RawFile) -> dict[str, Any]:
    h = raw.header
    dec = Decoder(raw.storages)
    eng = _dict(h.get("engine"), "engine")
    c = _dict(eng.get("config"), "engine.config")
    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    passes = c.get("passes")
    config = EngineConfig(
        backend=_str(c.get("backend"), "backend"),
        dtype=None if c.get("dtype") is None else _pick(dtypes, c.get("dtype"), "config dtype"),
        output=_str(c.get("output"), "output"), cuda_graphs=bool(c.get("cuda_graphs")),
        check_finite=bool(c.get("check_finite")),
        passes=None if passes is None else frozenset(_str(p, "pass") for p in _list(passes, "passes")),
        exact=bool(c.get("exact")), max_cached_shapes=_int(c.get("max_cached_shapes"), "max_cached_shapes"),
        output_memory_format=_str(c.get("output_memory_format"), "output_memory_format"),
    )  # fmt: skip
    shape = _shape(eng.get("example_shape"), "example_shape")
    formats = _dict(eng.get("formats", {}), "formats")
    for k, v in formats.items():
        if k not in _FORMATS or not isinstance(v, list) or not all(f in (None, "contiguous", "channels_last") for f in v):
            raise ValueError(f"engine.formats: bad entry {k!r}")
    kern = _dict(eng.get("kernels"), "engine.kernels")
    forced = _list(kern.get("forced", []), "kernels.forced")
    if not all(isinstance(kv, list) and len(kv) == 2 and all(isinstance(s, str) for s in kv) for kv in forced):
        raise ValueError("engine.kernels.forced: malformed")
    rows = _dict(kern.get("rows", {}), "engine.kernels.rows")
    if not all(isinstance(r, str) or r is None for r in rows.values()):
        raise ValueError("engine.kernels.rows: malformed")
    eng = {**eng, "example_shape": shape, "in_channels": _int(eng.get("in_channels"), "in_channels"),
           "formats": formats, "forced": [tuple(kv) for kv in forced], "exact": bool(kern.get("exact")),
           "rows": rows, "device": _str(eng.get("device"), "device")}  # fmt: skip
    size_model = None
    sm = eng.get("size_model")
    if sm is not None:
        cfg = _dict(_dict(sm, "size_model").get("unet"), "size_model.unet")
        size_model = UNetSizes(UNetConfig(**cfg))
    captures = []
    for i, cj in enumerate(_list(h.get("captures"), "captures")):
        captures.append(_capture(dec, _dict(cj, f"captures[{i}]"), f"captures[{i}]"))
    if not captures:
        raise ValueError("the file holds no capture")
    model = h.get("model")
    from unet_fast.engine.fingerprint import ModelFingerprint

    fp = (ModelFingerprint(model.get("code"), str(model.get("state")))
          if isinstance(model, dict) and isinstance(model.get("state"), str) else None)  # fmt: skip
    return {"engine": eng, "config": config, "captures": captures, "size_model": size_model, "decoder": dec,
            "dtype": _pick(dtypes, eng.get("dtype"), "dtype"), "weights": _dict(h.get("weights"), "weights"),
            "fingerprint": fp}  # fmt: skip


def _capture(dec: Decoder, cj: dict[str, Any], where: str) -> Capture:
    graph = dec.graph(cj.get("graph"), where)
    symbols = {}
    for pair in _list(cj.get("symbols", []), f"{where}.symbols"):
        if not (isinstance(pair, list) and len(pair) == 2 and pair[0] in (0, 2, 3) and isinstance(pair[1], str)
                and pair[1].isidentifier() and not pair[1].startswith("_")):  # fmt: skip
            raise ValueError(f"{where}.symbols: malformed {str(pair)[:40]}")
        symbols[pair[0]] = pair[1]
    guards = [_str(g, "guard") for g in _list(cj.get("guards", []), f"{where}.guards")]
    for g in guards:
        try:
            check_guard(g)
        except GuardRejected as e:
            raise ValueError(f"{where}: the guard {g[:80]!r} is not one a capture makes ({e}); the file is corrupt "
                             "or was crafted, and is not evaluated") from None  # fmt: skip
    shape = _shape(cj.get("example_shape"), f"{where}.example_shape")
    sym = SymbolicGraph(graph, symbols, guards, shape, batch_free=bool(cj.get("batch_free")))
    lines = [_str(s, "pass line") for s in _list(cj.get("pass_lines", []), f"{where}.pass_lines")]
    cap = Capture(sym, lines, _str(cj.get("reason", ""), "reason"), dynamic=bool(cj.get("dynamic")),
                  model_output=bool(cj.get("model_output")))  # fmt: skip
    try:
        ok = cap.matches(shape)
    except GuardError as e:
        raise ValueError(f"{where}: {e}") from None
    if not ok:
        raise ValueError(f"{where}: its guards fail at its own example shape {shape}")
    return cap


def _kernel_choices(backend: str, eng: dict[str, Any], notes: list[str]) -> tuple[registry.Choices, dict[str, str | None]]:
    """The Choices (what is forced) and the pinned family rows of a loaded engine: UNET_FAST_KERNELS now wins;
    else what the file's engine forced; else the row the file was packed for, where this machine runs it."""
    env = registry.Choices.from_env(exact=eng["exact"])
    env_keys = {k for k, v in env.forced if v != "auto"}
    forced = dict(eng["forced"])
    forced.update(dict(env.forced))
    registry.load(backend)
    pinned: dict[str, str | None] = {}
    for fam, row in eng["rows"].items():
        if fam not in _families(backend):
            continue
        if fam in env_keys:
            if env.get(fam) != (row or "none"):
                notes.append(f"UNET_FAST_KERNELS forces {fam}={env.get(fam)}, the file was packed for {fam}={row or 'none'}")
            continue
        why = _unrunnable(backend, fam, row)
        if fam in forced and forced[fam] != "auto":
            if why:
                del forced[fam]
                notes.append(f"the file's forced {fam}={row} cannot run here ({why})")
            continue
        if why:
            notes.append(f"the file was packed for {fam}={row}, which cannot run here ({why})")
        else:
            pinned[fam] = row
    return registry.Choices(eng["exact"], tuple(forced.items())), pinned


def _unrunnable(backend: str, family: str, row: str | None) -> str:
    if row is None:
        return ""
    rows = [k for k in registry.kernels(backend) if k.family == family and k.row == row]
    if not rows:
        return f"no {family} row {row!r} in this build"
    return registry.unavailable(rows[0])


def _preload(store: WeightStore, parts: dict[str, Any], device: torch.device, notes: list[str],
             preloaded: set[tuple[str, int]], where: str) -> None:  # fmt: skip
    """Hand the file's packed weights to `store` where they fit what runs here."""
    w = parts["weights"]
    if w.get("packing") != packing_fingerprint(store.backend_name):
        notes.append("the file's packed weights were made by another build of unet_fast's kernels")
        return
    if (w.get("backend"), str(w.get("device", "")).split(":")[0], w.get("dtype")) != (
            store.backend_name, device.type, _dtype_name(store.dtype)):  # fmt: skip
        notes.append(f"the file was packed for {w.get('backend')} / {w.get('device')} / {w.get('dtype')}, this engine "
                     f"runs {store.backend_name} / {device} / {_dtype_name(store.dtype)}")  # fmt: skip
        return
    dec: Decoder = parts["decoder"]
    for i, item in enumerate(_list(w.get("items", []), "weights.items")):
        at = f"weights.items[{i}]"
        try:
            item = _dict(item, at)
            role = _str(item.get("role"), f"{at}.role")
            if role != "bias":
                try:
                    k = registry.get(role)
                except KeyError:
                    continue  # a kernel this build does not have: whatever runs packs its own
                if k.backend != store.backend_name or store.context.eligible(k) is not None:
                    continue  # not a candidate here (another row): not loaded at all
            source = dec.tensor(_dict(item.get("source"), at).get("$t"), f"{at}.source")
            packed = dec.packed(item.get("packed"), f"{at}.packed")
        except (ValueError, TypeError) as e:
            raise EngineFileError(where, str(e)) from None
        _check_packed(role, source, packed, where, at)
        if device.type != "cpu":
            packed = _to_device(packed, device)
        store.preload(role, source, packed)
        preloaded.add((role, source.data_ptr()))


def _check_packed(role: str, source: Tensor, packed: Any, where: str, at: str) -> None:
    """A packed weight must describe its source weight (logical shape) and the kernel's row (`isa`): the
    kernels' launchers check the packed layout against these before any native code reads it."""
    shape = getattr(packed, "shape", None)
    ok = shape is not None and (tuple(shape) == tuple(source.shape) or (
        len(shape) == 2 and source.dim() in (2, 4) and tuple(shape) == (source.shape[0], source[0].numel())))  # fmt: skip
    if role == "bias":
        ok = isinstance(packed, Tensor) and tuple(packed.shape) == tuple(source.shape)
    isa = getattr(packed, "isa", None)
    if ok and isa is not None and role != "bias":
        ok = isa == registry.get(role).isa
    if not ok:
        raise EngineFileError(where, f"{at}: the packed weight of {role} ({type(packed).__name__} {shape}) does not "
                                     f"match its source weight {tuple(source.shape)}: the file is inconsistent")  # fmt: skip


def _to_device(v: Any, device: torch.device) -> Any:
    if isinstance(v, Tensor):
        return v.to(device)
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return dataclasses.replace(v, **{f.name: _to_device(getattr(v, f.name), device)
                                         for f in dataclasses.fields(v) if f.init})  # fmt: skip
    return v


def _dict(v: Any, what: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ValueError(f"{what}: expected an object")
    return v


def _list(v: Any, what: str) -> list[Any]:
    if not isinstance(v, list):
        raise ValueError(f"{what}: expected a list")
    return v


def _str(v: Any, what: str) -> str:
    if not isinstance(v, str):
        raise ValueError(f"{what}: expected a string")
    return v


def _int(v: Any, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise ValueError(f"{what}: expected an integer")
    return v


def _shape(v: Any, what: str) -> tuple[int, ...]:
    if not (isinstance(v, list) and len(v) == 4 and all(isinstance(s, int) and not isinstance(s, bool) and 0 < s < 1 << 31
                                                        for s in v)):  # fmt: skip
        raise ValueError(f"{what}: expected four positive sizes")
    return tuple(v)


def _pick(table: dict[str, Any], name: Any, what: str) -> Any:
    if name not in table:
        raise ValueError(f"{what}: unknown {str(name)[:20]!r}")
    return table[name]

