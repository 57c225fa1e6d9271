"""MNN's own per-op times on a whole benchmark network (issue 25): `Interpreter.runSessionWithCallBackInfo`,
whose begin / end callbacks run on the calling thread around every op, so at 1 thread the CPU time between
them (`--clock thread`) is the op's, unaffected by other processes' time slices.

    python benchmarks/bench_mnn_ops.py [--workload unet64-256] [--threads 1] [--repeats 5] [--precision high]

The model is the bench's (lively weights, unet_fast.export.to_onnx), converted as the `mnn` contender does
(in-process `_tools.mnnconvert`, never the `mnnconvert` console script: unet_fast/bench/peers_mnn.py).
Prints one row per op (median over the repeats) and the totals per op type."""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from unet_fast.bench.contenders import Settings, onnx_file
from unet_fast.bench.machine import machine_record
from unet_fast.bench.peers_mnn import convert
from unet_fast.bench.workloads import get_workload


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="unet64-256")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--precision", choices=("high", "normal"), default="high")
    ap.add_argument("--clock", choices=("wall", "thread"), default="thread")
    args = ap.parse_args(argv)
    if args.clock == "thread" and args.threads != 1:
        ap.error("--clock thread measures the calling thread only: use it with --threads 1")
    import MNN

    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    w = get_workload(args.workload)
    model, x = w.build(), w.make_input()
    with tempfile.TemporaryDirectory(prefix="mnn-ops-") as tmp:
        s = Settings("cpu", torch.float32, args.threads, Path(tmp))
        path, _how = onnx_file(model, x, s)
        mnn_path = convert(path, Path(tmp) / "model.mnn")
        interp = MNN.Interpreter(str(mnn_path))
        sess = interp.createSession({"backend": "CPU", "precision": args.precision, "numThread": args.threads})
        xs = np.ascontiguousarray(x.numpy())
        interp.getSessionInput(sess).copyFrom(
            MNN.Tensor(xs.shape, MNN.Halide_Type_Float, xs, MNN.Tensor_DimensionType_Caffe)
        )
        interp.runSession(sess)  # warm up
        times: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
        shapes: dict[tuple[str, str], tuple] = {}
        start = [0.0]

        def begin(tensors, info) -> bool:
            start[0] = clock()
            return True

        def end(tensors, info) -> bool:
            key = (info.getName(), info.getType())
            times[key].append((clock() - start[0]) * 1e3)
            shapes[key] = tuple(tensors[0].getShape()) if tensors else ()
            return True

        totals = []
        for _ in range(args.repeats):
            t0 = clock()
            interp.runSessionWithCallBackInfo(sess, begin, end)
            totals.append((clock() - t0) * 1e3)
    m = machine_record()
    print(f"# MNN {MNN.version()} per-op times, {args.workload}, {args.threads} threads, precision={args.precision}, "
          f"{args.clock} clock, median of {args.repeats}; {m['cpu']}, load avg {m['load_average_1min']}")  # fmt: skip
    print("| op | type | output shape | ms |\n|---|---|---|---|")
    by_type: dict[str, float] = collections.defaultdict(float)
    for (name, kind), t in times.items():
        med = statistics.median(t)
        by_type[kind] += med
        print(f"| {name} | {kind} | {'x'.join(map(str, shapes[(name, kind)]))} | {med:.2f} |")
    print("\nper op type (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(by_type.items(), key=lambda kv: -kv[1])))
    print(f"whole run with callbacks: median {statistics.median(totals):.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
