"""Whole-model time of the `cpu` backend with one CPU kernel variant, for A/B runs on a shared machine.

    UNET_FAST_KERNELS=cpu=avx2 python benchmarks/kernels/cpu_variant_e2e.py unet64-256 --calls 5 --threads 1
    UNET_FAST_KERNELS=cpu=avx512 python benchmarks/kernels/cpu_variant_e2e.py unet64-256 --calls 5 --threads 1

One process per variant (the variant is chosen when optimize() packs the weights); alternate the processes
and repeat them, then compare medians. Times are CPU time of the process (`time.process_time`), so with
--threads 1 other processes' time slices do not count; with more threads use the pytest-benchmark suite
(benchmarks/test_unet64.py) on a quiet machine. Prints the median, min, max, the relative L2 error against
the fp32 PyTorch model on the same input, and the kernels the steps ran (the report's step records, which
name the variant).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter

import torch

import unet_fast
from unet_fast.bench.workloads import get_workload


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workload", help="e.g. unet64-256, unet64-512")
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    wl = get_workload(args.workload)
    model = wl.build().eval()
    x = wl.make_input(seed=1)
    fast = unet_fast.optimize(model, x, backend="cpu")
    with torch.no_grad():
        ref = model(x)
        err = float((fast(x) - ref).norm() / ref.norm())
        samples = []
        for _ in range(args.calls):
            t0 = time.process_time()
            fast(x)
            samples.append(time.process_time() - t0)
    ran = Counter(r.kernel for r in fast.report_data().steps)
    algo = ", ".join(f"{n} x {k}" for k, n in ran.items())
    med, lo, hi = (1e3 * f(samples) for f in (statistics.median, min, max))
    print(f"{args.workload}: {med:.1f} ms (min {lo:.1f}, max {hi:.1f}), {args.threads} threads, CPU time; "
          f"rel-L2 {err:.1e}; {algo}")  # fmt: skip


if __name__ == "__main__":
    main()
