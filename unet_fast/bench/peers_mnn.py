"""MNN (Alibaba) as a bench contender: the fp32 CPU engine that, like ours, runs 3x3 convs by Winograd.

Converted from the run's shared ONNX file (`contenders.onnx_file`: unet_fast.export.to_onnx, BN folded,
static shape) to an `.mnn` file by MNN's converter **called in-process**: `_tools.mnnconvert(argv)`, the C++
converter binding that the `mnnconvert` console script wraps. The console script is never run: its module
(`MNN.tools.mnnconvert`) imports `MNN.tools.utils.log`, which shells out `pip install aliyun-log-python-sdk`
when that SDK is missing and, on every conversion, fetches credentials from and sends a usage log to a
remote logging service. `_tools` is a plain C extension that imports neither (tests/bench/test_peers.py
checks that converting loads no `MNN.tools` module and starts no process).

Run with the Session API: `Interpreter(file).createSession({"backend": "CPU", "precision": P,
"numThread": threads})`, P = "high" (the `mnn` row) or "normal" (the `mnn-normal` row). On x86 both compute
in fp32 (MNN's fp16/bf16 paths are ARM / opt-in); the row's note names the API, the precision and threads.
fp32 only, CPU only."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from unet_fast.bench.contenders import Prepared, Settings, _first_call, onnx_file

PRECISIONS = ("high", "normal")
INSTALL = 'pip install -e ".[peers]" (or ".[bench]")'


def check(s: Settings) -> str:
    """'' when MNN can run this setting here, else the reason (with the install command)."""
    if importlib.util.find_spec("MNN") is None or importlib.util.find_spec("_tools") is None:
        return f"MNN is not installed ({INSTALL})"
    if s.device != "cpu":
        return "benchmarked on CPU only"
    if s.dtype != torch.float32:
        return "benchmarked at float32 only (its fp16/bf16 paths are ARM or opt-in low precision)"
    return ""


@contextlib.contextmanager
def _stdout_to(path: Path) -> Iterator[None]:
    """Send the process's C-level stdout to `path` for the block: the converter prints a line per node."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(path, "ab") as f:
        os.dup2(f.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


def convert(onnx_path: Path, mnn_path: Path) -> Path:
    """ONNX -> MNN with the converter core in this process (`_tools.mnnconvert`, never the `mnnconvert`
    console script: see the module docstring); fp32 weights (no --fp16, no quantization). The converter's
    log goes to `<mnn_path>.log`. Raises RuntimeError when it fails or writes nothing."""
    import _tools  # MNN's converter binding (C++); imports no Python module of MNN.tools

    mnn_path.parent.mkdir(parents=True, exist_ok=True)
    log = mnn_path.with_suffix(".log")
    argv = ["mnnconvert", "-f", "ONNX", "--modelFile", str(onnx_path), "--MNNModel", str(mnn_path),
            "--bizCode", "unet_fast"]  # fmt: skip
    with _stdout_to(log):
        ok = _tools.mnnconvert(argv)
    if not ok or not mnn_path.exists():
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(f"MNN's converter failed on {onnx_path}: {tail}")
    return mnn_path


def prepare(precision: str):
    """The contender's prepare(model, x, settings) for MNN's Session API at `precision` ('high' | 'normal')."""
    if precision not in PRECISIONS:
        raise ValueError(f"MNN precision must be one of {PRECISIONS}, got {precision!r}")

    def run_prepare(model: nn.Module, x: Tensor, s: Settings) -> Prepared:
        import MNN

        t0 = time.perf_counter()
        path, how = onnx_file(model, x, s)
        mnn_path = s.workdir / "model.mnn"
        if not mnn_path.exists():  # one conversion per workload run, shared by both precisions
            convert(path, mnn_path)
        interp = MNN.Interpreter(str(mnn_path))
        session = interp.createSession({"backend": "CPU", "precision": precision, "numThread": s.threads})
        inp = interp.getSessionInput(session)
        xs = np.ascontiguousarray(x.float().numpy())
        if tuple(inp.getShape()) != xs.shape:
            interp.resizeTensor(inp, xs.shape)
            interp.resizeSession(session)
        staged = MNN.Tensor(xs.shape, MNN.Halide_Type_Float, xs, MNN.Tensor_DimensionType_Caffe)  # a copy of xs
        out = interp.getSessionOutput(session)
        shape = tuple(out.getShape())
        host = MNN.Tensor(shape, MNN.Halide_Type_Float, np.zeros(shape, np.float32), MNN.Tensor_DimensionType_Caffe)

        def run() -> np.ndarray:
            inp.copyFrom(staged)
            interp.runSession(session)
            out.copyToHostTensor(host)  # MNN's NC4HW4 -> NCHW, in the timed call as every peer's output copy
            # getNumpyData() is a view of host's memory (measured: read after host is freed it is garbage,
            # max abs error 1e22), so the row gets its own copy, as ORT and OpenVINO return their own arrays
            return np.array(host.getNumpyData(), copy=True)

        note = (f"MNN {MNN.version()}, Session API, precision={precision} (fp32 on x86), "
                f"{s.threads} threads; converted in-process by _tools.mnnconvert; {how}")  # fmt: skip
        return Prepared(run, _first_call(run, s, t0), note, precision="fp32")

    return run_prepare
