"""What identifies a model without exporting it (the compile cache's key, engine/cache.py; the check of
`unet_fast.load(path, model=...)`), and what identifies this build of unet_fast.

`model_fingerprint(model)` hashes, in module order:
- `code`: each submodule's class (module + qualified name), the source file of every class in its MRO that is
  not torch's own (a helper function or constant in the same file counts: the whole file is hashed), the
  version of the distribution that ships it (segmentation_models_pytorch, monai, ...), a `forward` set on an
  instance, every hook (by its source), and each submodule's plain attributes (sizes, modes, flags, nested
  config dataclasses: `UNet.config`, `nn.Upsample.mode`, `align_corners` ...): what decides the graph
  without being a tensor. torch's own classes are covered by the torch version in the cache key.
- `state`: every parameter and buffer (persistent or not) and tensor attribute, by name, dtype, shape and
  bytes (sha256: ~0.1 s for 124 MiB).

Known gaps (said in docs/engine_files.md): a forward that reads a global defined in another file (or an
environment variable, a torch flag, the time) that changes without any hashed file changing; a library
function patched at run time; a class without source (defined in a REPL or by exec: then `code` is None and
the cache is not used, with the reason).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import inspect
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["ModelFingerprint", "model_fingerprint", "unet_fast_fingerprint"]


@dataclass(frozen=True)
class ModelFingerprint:
    """`code`: sha256 of what decides the model's graph (None when it cannot be known: `why`), `state`: of its
    tensors."""

    code: str | None
    state: str
    why: str = ""


@functools.cache
def _module_internals() -> frozenset[str]:
    return frozenset(vars(nn.Module()))


def _is_torch(cls: type) -> bool:
    """torch's own class (covered by the torch version in the key) or one of Python's. A class that only says
    it comes from `builtins` (one made by exec) is neither."""
    mod = getattr(cls, "__module__", "") or ""
    if mod.split(".")[0] == "torch":
        return True
    if mod in ("builtins", "typing", "abc", "collections", "enum"):
        return getattr(sys.modules.get(mod), cls.__qualname__, None) is cls
    return False


class _NoCode(Exception):
    pass


@functools.lru_cache(maxsize=512)
def _file_hash(path: str, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@functools.lru_cache(maxsize=512)
def _check_class_source(cls: type, path: str, mtime_ns: int) -> None:
    """inspect.getsource(cls), once per class and file version: it parses the whole file (~10 ms), and a model
    has many modules of a few classes (the compile cache's key is computed on every optimize)."""
    inspect.getsource(cls)


def _class_code(cls: type) -> list[Any]:
    """The source files (hashes) of `cls` and its non-torch bases, and their distributions' versions."""
    out: list[Any] = []
    for c in cls.__mro__:
        if _is_torch(c) or c is object:
            continue
        try:
            path = inspect.getsourcefile(c)
            if path is None or not Path(path).is_file():
                raise TypeError("no source file")
            st = Path(path).stat()
            # the source text of the class itself must be findable too (a class made by exec in a module file)
            _check_class_source(c, path, st.st_mtime_ns)
        except (TypeError, OSError) as e:
            raise _NoCode(f"the class {c.__module__}.{c.__qualname__} has no source to hash ({e})") from None
        out.append([f"{c.__module__}.{c.__qualname__}", _file_hash(path, st.st_mtime_ns, st.st_size),
                    _distribution_version(c.__module__)])  # fmt: skip
    return out


@functools.lru_cache(maxsize=256)
def _distribution_version(module: str) -> str:
    top = module.split(".")[0]
    if top in ("__main__", "unet_fast"):
        return ""
    try:
        from importlib import metadata

        dists = metadata.packages_distributions().get(top, [])
        return ",".join(f"{d}=={metadata.version(d)}" for d in sorted(dists))
    except Exception:
        return ""


def _function_code(fn: Any, what: str) -> Any:
    fn = getattr(fn, "__func__", fn)
    if isinstance(fn, functools.partial):
        return ["partial", _function_code(fn.func, what), _plain(list(fn.args), what), _plain(fn.keywords, what)]
    mod = getattr(fn, "__module__", "") or ""
    name = f"{mod}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"
    if mod.split(".")[0] == "torch":
        return name
    try:
        return [name, hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()]
    except (TypeError, OSError):
        raise _NoCode(f"{what}: the function {name} has no source to hash") from None


def _plain(v: Any, what: str, depth: int = 0) -> Any:
    """A JSON-able description of an attribute value; _NoCode where none can be given."""
    if depth > 8:
        raise _NoCode(f"{what}: nested too deep")
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, bytes):
        return ["bytes", hashlib.sha256(v).hexdigest()]
    if isinstance(v, (torch.dtype, torch.device, torch.memory_format, torch.layout)):
        return str(v)
    if isinstance(v, torch.Size):
        return ["Size", list(v)]
    if isinstance(v, enum.Enum):
        return [f"{type(v).__module__}.{type(v).__qualname__}", _plain(v.value, what, depth + 1)]
    if isinstance(v, (list, tuple)):
        return [type(v).__name__, [_plain(e, what, depth + 1) for e in v]]
    if isinstance(v, (set, frozenset)):
        return [type(v).__name__, sorted(json.dumps(_plain(e, what, depth + 1), sort_keys=True) for e in v)]
    if isinstance(v, dict):
        return ["dict", sorted([json.dumps(_plain(k, what, depth + 1), sort_keys=True), _plain(e, what, depth + 1)]
                               for k, e in v.items())]  # fmt: skip
    if isinstance(v, type):
        return ["type", f"{v.__module__}.{v.__qualname__}"] + ([] if _is_torch(v) else _class_code(v))
    if dataclasses.is_dataclass(v):
        return [f"{type(v).__module__}.{type(v).__qualname__}", _plain(dataclasses.asdict(v), what, depth + 1)]
    if callable(v) and (inspect.isfunction(v) or inspect.ismethod(v) or inspect.isbuiltin(v)
                        or isinstance(v, functools.partial)):  # fmt: skip
        return ["fn", _function_code(v, what)]
    if hasattr(v, "__dict__") and not isinstance(v, (nn.Module, Tensor)):
        return [f"{type(v).__module__}.{type(v).__qualname__}", _class_code(type(v)) if not _is_torch(type(v)) else [],
                _plain({k: e for k, e in vars(v).items()}, what, depth + 1)]  # fmt: skip
    raise _NoCode(f"{what}: a {type(v).__module__}.{type(v).__qualname__} the cache key cannot describe")


def model_fingerprint(model: nn.Module) -> ModelFingerprint:
    """See the module docstring. Never raises for an odd model: `code` is None with the reason instead."""
    state = hashlib.sha256()
    tensors: list[tuple[str, Tensor]] = [*model.named_parameters(remove_duplicate=False),
                                         *model.named_buffers(remove_duplicate=False)]  # fmt: skip
    for name, m in model.named_modules(remove_duplicate=False):
        for k, v in vars(m).items():
            if isinstance(v, Tensor) and k not in _module_internals():
                tensors.append((f"{name}.{k}" if name else k, v))
    for name, t in tensors:
        t = t.detach()
        state.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        data = t.contiguous().cpu().reshape(-1)
        if data.numel():
            state.update(memoryview(data.view(torch.uint8).numpy()))
    code = hashlib.sha256()
    try:
        if getattr(torch.nn.modules.module, "_global_forward_hooks", None) or getattr(
                torch.nn.modules.module, "_global_forward_pre_hooks", None):  # fmt: skip
            raise _NoCode("global module hooks are registered (their effect cannot be keyed)")
        for name, m in model.named_modules(remove_duplicate=False):
            cls = type(m)
            what = f"module {name or '<root>'} ({cls.__name__})"
            item: list[Any] = [name, f"{cls.__module__}.{cls.__qualname__}", m.training]
            if not _is_torch(cls):
                item.append(_class_code(cls))
            attrs = {}
            for k, v in vars(m).items():
                if k in _module_internals() or isinstance(v, (Tensor, nn.Module)):
                    continue
                attrs[k] = _plain(v, f"{what}.{k}")
            item.append(sorted(attrs.items()))
            hooks = [h for d in (m._forward_hooks, m._forward_pre_hooks) for h in d.values()]
            item.append([_function_code(h, f"{what} hook") for h in hooks])
            code.update(json.dumps(item, sort_keys=True, default=str).encode())
        digest: str | None = code.hexdigest()
        why = ""
    except _NoCode as e:
        digest, why = None, str(e)
    return ModelFingerprint(digest, state.hexdigest(), why)


@functools.cache
def unet_fast_fingerprint() -> str:
    """sha256 of this unet_fast's engine code (graph, engine, backends, kernels, models: the Python files) and
    of its compiled extensions (path, size, mtime): a rebuilt or edited unet_fast never reuses a cache entry
    of another."""
    root = Path(__file__).resolve().parents[1]  # unet_fast/ (importing the package here would be a cycle)
    h = hashlib.sha256(getattr(sys.modules.get("unet_fast"), "__version__", "").encode())
    files = [root / "__init__.py", root / "model_guard.py"]
    for sub in ("graph", "engine", "backends", "kernels", "models"):
        files += sorted((root / sub).rglob("*.py"))
    for f in files:
        if f.is_file():
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
    for ext in sorted(root.glob("_*.so")) + sorted(root.glob("_*.pyd")):
        st = ext.stat()
        h.update(f"{ext.name}|{st.st_size}|{st.st_mtime_ns}".encode())
    h.update(f"{sys.version_info[:2]}".encode())
    return h.hexdigest()
