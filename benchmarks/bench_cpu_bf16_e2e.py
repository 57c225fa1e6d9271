"""End-to-end latency of the cpu backend in bf16 (issue 17) against our fp32 cpu backend and eager PyTorch bf16
channels_last, on one workload (default unet64-256, lively weights), with each one's parity against the fp32
model. Interleaved rounds, medians, wall clock, --threads threads. A quick check for a helper's notes; the
official figures come from `unet-fast bench --dtype bfloat16` on a quiet machine.

    python benchmarks/bench_cpu_bf16_e2e.py [--workload unet64-256] [--threads 2] [--repeats 9] [--isa auto]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch

import unet_fast
from unet_fast.bench.workloads import get_workload
from unet_fast.kernels import cpu_bf16
from unet_fast.parity import compare


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", default="unet64-256")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--isa", default="auto", help="bf16 tile backend (UNET_FAST_KERNELS bf16= at optimize time)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    w = get_workload(args.workload)
    model = w.build().eval()
    x = torch.randn(w.input_shape, generator=torch.Generator().manual_seed(0))
    os.environ["UNET_FAST_KERNELS"] = f"bf16={args.isa}"  # read once, by optimize
    bf16 = unet_fast.optimize(model, x, backend="cpu", dtype=torch.bfloat16)
    del os.environ["UNET_FAST_KERNELS"]
    fp32 = unet_fast.optimize(model, x, backend="cpu")
    eager = copy.deepcopy(model).to(memory_format=torch.channels_last, dtype=torch.bfloat16)
    xe = x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    runs = {f"unet_fast cpu bf16 ({cpu_bf16.choose_backend(args.isa).name})": lambda: bf16(x),
            "unet_fast cpu fp32": lambda: fp32(x), "eager bf16 channels_last": lambda: eager(xe)}  # fmt: skip
    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.inference_mode():
        ref = model(x)
        for name, fn in runs.items():
            c = compare(ref, fn().float(), 1)
            print(f"{name}: rel-L2 {c.rel_l2:.2e}, argmax agreement {100 * c.argmax_agreement:.2f}%")
        for _ in range(args.repeats):  # interleaved: a busy machine slows all alike
            for name, fn in runs.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    print(f"{args.workload}, {args.threads} threads, {args.repeats} rounds, torch {torch.__version__}")
    for name, ts in times.items():
        print(f"{name}: median {1e3 * statistics.median(ts):.1f} ms (min {1e3 * min(ts):.1f}, max {1e3 * max(ts):.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
