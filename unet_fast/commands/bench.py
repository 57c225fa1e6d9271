"""`unet-fast bench`: time U-Net inference on this machine."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("bench", help="time U-Net inference on this machine")
    b.add_argument("--workload", default="unet64-256", help="workload name (see shared BENCHMARKING)")
    b.add_argument("--batch", type=int, default=None, help="batch size (default: the workload's)")
    b.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    b.add_argument("--repeats", type=int, default=5, help="timed runs (median reported)")
    b.add_argument("--warmup", type=int, default=1, help="untimed warm-up runs")
    b.add_argument("--seed", type=int, default=0)
    b.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unet_fast.bench.reference import run_reference_bench

    return run_reference_bench(args)
