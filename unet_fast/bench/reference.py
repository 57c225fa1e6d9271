"""`unet-fast bench` at the foundation stage: the reference model's latency on this machine."""

from __future__ import annotations

import argparse

import torch

from unet_fast.bench.machine import machine_record
from unet_fast.bench.timing import time_cpu
from unet_fast.bench.workloads import get_workload


def run_reference_bench(args: argparse.Namespace) -> int:
    workload = get_workload(args.workload)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = workload.build()
    x = workload.make_input(args.batch, args.seed)
    m = machine_record()
    print(f"workload {workload.name}: {workload.description}; input {tuple(x.shape)}")
    print(f"machine: {m['cpu']}, {m['threads']} threads, torch {m['torch']}, commit {m['commit']}")
    with torch.inference_mode():
        t = time_cpu(lambda: model(x), repeats=args.repeats, warmup=args.warmup)
    print(f"{'contender':<28} {'median ms':>10} {'min':>9} {'max':>9}")
    print(f"{'pytorch eager (reference)':<28} {t.median_ms:>10.1f} {t.min_ms:>9.1f} {t.max_ms:>9.1f}  "
          f"({t.repeats} runs)")  # fmt: skip
    return 0
