"""One-vector Winograd column blocks for convs with Cout <= one vector (cpu_winograd.winograd_nr) against the
variant's two-vector block for every conv (the engine before it), whole networks, same process.

    python benchmarks/bench_winograd_narrow.py [--workloads unet-small,smp-resnet34] [--threads 1] [--repeats 7]

Two engines per workload, built from the same model: one with the rule, one with `winograd_nr` patched to
return the variant's Winograd block for every Cout. Rounds alternate the two; at 1 thread the clock is the
calling thread's CPU time (other processes' time slices do not inflate it), else wall time. Medians in ms, the
ratio narrow / wide, and the outputs' largest difference (the sums are the same, in the same order: 0).
smp-resnet34 needs segmentation_models_pytorch (and a torchvision matching your torch).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

import unet_fast
from unet_fast.bench.machine import machine_record
from unet_fast.bench.workloads import get_workload, unavailable_workloads
from unet_fast.kernels import cpu_winograd


def build_pair(workload: str):
    w = get_workload(workload)
    model, x = w.build(), w.make_input()
    narrow = unet_fast.optimize(model, x, backend="cpu")
    rule = cpu_winograd.winograd_nr
    cpu_winograd.winograd_nr = lambda variant, out_channels: variant.winograd_nr
    try:
        wide = unet_fast.optimize(model, x, backend="cpu")
    finally:
        cpu_winograd.winograd_nr = rule
    return narrow, wide, x


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default="unet-small,smp-resnet34")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock = time.thread_time if args.threads == 1 else time.perf_counter
    missing = unavailable_workloads()
    m = machine_record()
    print(f"# {args.threads} thread(s), {'CPU time of the calling thread' if args.threads == 1 else 'wall'}, "
          f"median of {args.repeats} alternating rounds; {m.get('cpu')}, torch {m.get('torch')}, commit "
          f"{m.get('commit')}, load average {m.get('load_average_1min')}")  # fmt: skip
    print(
        "| workload | one-vector blocks for Cout <= lanes, ms | two-vector blocks everywhere, ms | ratio | max abs diff |"
    )
    print("| --- | --- | --- | --- | --- |")
    for workload in args.workloads.split(","):
        if workload in missing:
            print(f"| {workload} | not run: {missing[workload]} | | | |")
            continue
        narrow, wide, x = build_pair(workload)
        samples: dict[str, list[float]] = {"narrow": [], "wide": []}
        with torch.inference_mode():
            outs = {k: e(x) for k, e in (("narrow", narrow), ("wide", wide))}
            for r in range(args.repeats):
                for k, e in (
                    (("narrow", narrow), ("wide", wide))
                    if r % 2 == 0
                    else (("wide", wide), ("narrow", narrow))
                ):
                    t0 = clock()
                    e(x)
                    samples[k].append((clock() - t0) * 1e3)
        a, b = (statistics.median(samples[k]) for k in ("narrow", "wide"))
        diff = (outs["narrow"] - outs["wide"]).abs().max().item()
        print(f"| {workload} | {a:.1f} | {b:.1f} | {a / b:.3f} | {diff:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
