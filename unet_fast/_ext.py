"""Loads the native extensions. A missing extension becomes None here; the call that needs it raises
an error that names the fix (require_cpu / require_cuda)."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

# torch first: its libgomp.so.1 is then already loaded, and the loader binds _C to the same OpenMP runtime
# instead of starting a second thread pool that would fight torch's for the cores.
import torch

_INFO_FILE = Path(__file__).with_name("_build_info.json")
_REBUILD = "rebuild with `pip install -e .` (or `python setup.py build_ext --inplace`)"

try:
    from unet_fast import _C as cpu_ext
except ImportError as e:  # not built, or built for another Python
    cpu_ext: ModuleType | None = None  # type: ignore[no-redef]
    _cpu_error = f"unet_fast._C failed to import ({e}); {_REBUILD}"
else:
    _cpu_error = ""

try:
    from unet_fast import _cuda as cuda_ext
except ImportError as e:
    cuda_ext: ModuleType | None = None  # type: ignore[no-redef]
    _cuda_error = f"unet_fast._cuda is not available ({e})"
else:
    _cuda_error = ""


def build_info() -> dict[str, Any]:
    """What setup.py recorded at build time (commit, compilers, CUDA archs), or {} if never built."""
    try:
        return json.loads(_INFO_FILE.read_text())
    except (OSError, ValueError):
        return {}


def cuda_unavailable_reason() -> str:
    """Why the CUDA extension cannot run here, or '' when it can."""
    if cuda_ext is None:
        recorded = build_info().get("cuda", {})
        if recorded and not recorded.get("built", True):
            return f"unet_fast._cuda was not built: {recorded.get('reason')}"
        return _cuda_error
    if not torch.cuda.is_available():
        return "no CUDA device is visible to torch (torch.cuda.is_available() is False)"
    return ""


def require_cpu() -> ModuleType:
    if cpu_ext is None:
        raise RuntimeError(_cpu_error)
    return cpu_ext


def require_cuda() -> ModuleType:
    reason = cuda_unavailable_reason()
    if reason:
        raise RuntimeError(f"the CUDA backend cannot run: {reason}")
    assert cuda_ext is not None
    return cuda_ext
