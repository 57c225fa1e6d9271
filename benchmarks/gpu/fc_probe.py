"""The machine probe of first_contact.py (run in a process of its own, so the orchestrator never holds a CUDA
context): versions, the GPU's properties, and two measured ceilings: a bf16 matrix product and a
device-to-device copy, timed with CUDA events (median of 10 after 3 warm-ups). Prints one JSON object."""

from __future__ import annotations

import importlib
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

MODULES = (
    "triton",
    "numpy",
    "onnx",
    "onnxruntime",
    "pytest",
    "xdist",
    "pytest_timeout",
    "pybind11",
    "setuptools",
)


def _version(name: str) -> str | None:
    try:
        m = importlib.import_module(name)
    except Exception as e:  # absent, or broken: both worth recording
        return None if isinstance(e, ModuleNotFoundError) else f"import failed: {type(e).__name__}"
    v = getattr(m, "__version__", None)
    if v is None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version({"xdist": "pytest-xdist", "pytest_timeout": "pytest-timeout"}.get(name, name))
        except PackageNotFoundError:
            v = "unknown"
    return str(v)


def _median_ms(fn, warmup: int = 3, repeats: int = 10) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def measure(matmul_n: int = 8192, copy_mib: int = 2048) -> dict:
    """bf16 n^3 matmul rate on random data and device copy bandwidth (bytes read + written)."""
    a = torch.randn(matmul_n, matmul_n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(matmul_n, matmul_n, device="cuda", dtype=torch.bfloat16)
    mm_ms = _median_ms(lambda: a @ b)
    src = torch.empty(copy_mib * 2**20, device="cuda", dtype=torch.uint8)
    dst = torch.empty_like(src)
    cp_ms = _median_ms(lambda: dst.copy_(src))
    return {"matmul_bf16_n": matmul_n, "matmul_bf16_ms": mm_ms, "matmul_bf16_tflops": 2 * matmul_n**3 / mm_ms / 1e9,
            "copy_mib": copy_mib, "copy_ms": cp_ms, "copy_tb_s": 2 * src.numel() / cp_ms / 1e9}  # fmt: skip


def main() -> int:
    from unet_fast.bench.machine import machine_record

    out: dict = {"record": machine_record(), "versions": {m: _version(m) for m in MODULES},
                 "torch": torch.__version__, "torch_cuda": torch.version.cuda,
                 "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                 "cuda_available": torch.cuda.is_available()}  # fmt: skip
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        out["device"] = {"name": p.name, "capability": f"{p.major}.{p.minor}", "arch": p.major * 10 + p.minor,
                         "sms": p.multi_processor_count, "memory_gib": round(p.total_memory / 2**30, 1),
                         "l2_mib": round(getattr(p, "L2_cache_size", 0) / 2**20, 1), "count": torch.cuda.device_count()}  # fmt: skip
        try:
            out["measured"] = measure()
        except Exception as e:  # a ceiling we could not measure is a note, not a failed run
            out["measured_error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
