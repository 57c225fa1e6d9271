"""First call at an unseen input size vs steady state at that size, and memory over many sizes (issue 14).

    python benchmarks/bench_new_shapes.py [--models unet32,milesial32,smp34] [--backends cpu,torch]
        [--threads 1] [--repeats 5] [--rss-sizes 40] [--clock wall|thread]
        [--out benchmarks/results/new-shapes-<date>.json]

Each model is optimized at 1x3x128x128 (optimize time recorded), then for every new shape of the issue's
table: the wall time of the first call at that shape, then the median of `--repeats` further calls (steady
state). `--rss-sizes N` also calls the base-32 UNet (cpu backend) at N distinct random sizes and records the
resident-memory growth (/proc/self/statm). Uses only `optimize()` and calling the module, so the same script
measures older commits (the "before" column). Wall-clock medians on a shared machine: the JSON records the
load average; rerun on a quiet machine for publishable figures. On a busy machine `--threads 1 --clock thread`
times the CPU time of the calling thread (the kernels run on it with one thread), which other processes'
time slices do not inflate.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "models"))

SHAPES = [(1, 3, 160, 128), (1, 3, 97, 131), (1, 3, 208, 176), (3, 3, 64, 80)]


def build(name: str) -> torch.nn.Module:
    from unet_fast import UNet
    from unet_fast.bench.workloads import randomize_bn

    torch.manual_seed(0)
    if name == "unet32":
        m = UNet(3, 2, 32, 4, "batch", "transpose")
    elif name == "milesial32":
        from milesial_unet import MilesialUNet

        m = MilesialUNet(3, 2, False, base=32)
    elif name == "smp34":
        from smp_like import SmpLikeUnet

        m = SmpLikeUnet("resnet34", 3, 2)
    else:
        raise ValueError(f"unknown model {name!r}: unet32 | milesial32 | smp34")
    return randomize_bn(m)


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


CLOCK = time.perf_counter


def table(model_name: str, backend: str, repeats: int) -> dict:
    import unet_fast

    m = build(model_name)
    t0 = time.perf_counter()
    fast = unet_fast.optimize(m, torch.randn(1, 3, 128, 128), backend=backend)
    opt_s = time.perf_counter() - t0
    fast(torch.randn(1, 3, 128, 128))  # the example shape itself is not "new"
    rows = []
    for shape in SHAPES:
        x = torch.randn(shape)
        t0 = CLOCK()
        fast(x)
        first = CLOCK() - t0
        steady = []
        for _ in range(repeats):
            t0 = CLOCK()
            fast(x)
            steady.append(CLOCK() - t0)
        med = statistics.median(steady)
        caps = len(fast.captures)  # the promise: one capture serves every size (issue 23: not on torch 2.14)
        rows.append({"shape": list(shape), "first_ms": first * 1e3, "steady_ms": med * 1e3, "ratio": first / med,
                     "captures": caps})  # fmt: skip
        print(f"{model_name:<11} {backend:<6} {'x'.join(map(str, shape)):<12} first {first * 1e3:8.1f} ms  "
              f"steady {med * 1e3:7.1f} ms  ratio {first / med:5.2f}  captures {caps}", flush=True)  # fmt: skip
    return {"model": model_name, "backend": backend, "optimize_s": opt_s, "rows": rows}


def rss_growth(n_sizes: int, backend: str) -> dict:
    import unet_fast

    m = build("unet32")
    fast = unet_fast.optimize(m, torch.randn(1, 3, 128, 128), backend=backend)
    fast(torch.randn(1, 3, 128, 128))
    rng = random.Random(0)
    before = rss_mib()
    peak = before
    for _ in range(n_sizes):
        fast(torch.randn(1, 3, rng.randint(64, 256), rng.randint(64, 256)))
        peak = max(peak, rss_mib())
    after = rss_mib()
    caps = len(fast.captures) + fast.__dict__.get("_dropped_captures", 0)
    print(f"RSS over {n_sizes} sizes ({backend}): {before:.0f} -> {after:.0f} MiB (peak {peak:.0f}), "
          f"{caps} captures made", flush=True)  # fmt: skip
    return {"backend": backend, "sizes": n_sizes, "rss_before_mib": before, "rss_after_mib": after,
            "rss_peak_mib": peak, "growth_mib": after - before, "captures_made": caps}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="unet32,milesial32,smp34")
    ap.add_argument("--backends", default="cpu,torch")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rss-sizes", type=int, default=40)
    ap.add_argument("--clock", choices=("wall", "thread"), default="wall")
    ap.add_argument("--label", default="", help="e.g. 'before' / 'after', stored in the JSON")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    global CLOCK
    CLOCK = time.thread_time if a.clock == "thread" else time.perf_counter
    import unet_fast

    record = {"label": a.label, "threads": a.threads, "clock": a.clock, "load_avg_1m": os.getloadavg()[0],
              "torch": torch.__version__, "unet_fast": str(Path(unet_fast.__file__).parent),
              "tables": [], "rss": None}  # fmt: skip
    for model_name in a.models.split(","):
        for backend in a.backends.split(","):
            record["tables"].append(table(model_name, backend, a.repeats))
    if a.rss_sizes:
        record["rss"] = rss_growth(a.rss_sizes, "cpu")
    out = Path(a.out or f"benchmarks/results/new-shapes-{time.strftime('%Y-%m-%d-%H%M')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    print("wrote", out)


if __name__ == "__main__":
    main()
