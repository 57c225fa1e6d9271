"""What a results row records about where it was measured: CPU, cores, threads, GPU, library versions,
the commit (and whether the tree was dirty), and how busy the machine was."""

from __future__ import annotations

import datetime as _dt
import importlib
import importlib.util
import os
import platform
import re
import subprocess
from pathlib import Path

import torch

_ROOT = Path(__file__).resolve().parents[2]
PEER_MODULES = ("numpy", "triton", "onnx", "onnxruntime", "openvino", "tensorrt", "matplotlib", "MNN", "ncnn", "pnnx")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=_ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def git_commit() -> str:
    try:
        return _git("rev-parse", "--short", "HEAD")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def git_dirty() -> bool | None:
    """True when tracked files differ from the commit (the numbers then belong to uncommitted code)."""
    try:
        return bool(_git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return None


def library_version(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    try:
        return str(getattr(importlib.import_module(module), "__version__", "unknown"))
    except Exception as e:  # a broken install is worth recording, not crashing on
        return f"import failed: {type(e).__name__}"


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def machine_record() -> dict:
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "gpu": gpu,
        "cuda": torch.version.cuda if gpu else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "versions": {m: library_version(m) for m in PEER_MODULES},
        "commit": git_commit(),
        "dirty": git_dirty(),
        "load_average_1min": load_average(),
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def default_machine_name() -> str:
    """A file-name-safe label: GPU name if any, else CPU model, plus the core count."""
    base = torch.cuda.get_device_name() if torch.cuda.is_available() else cpu_model()
    base = re.sub(r"\b(\d+-Core Processor|Processor|CPU|with Radeon.*|@.*)", "", base)
    slug = re.sub(r"[^a-z0-9]+", "-", base.lower()).strip("-") or "machine"
    return f"{slug}-{os.cpu_count()}c"
