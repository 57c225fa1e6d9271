"""The `unet-fast` command line. Exit codes: 0 success, 1 runtime failure, 2 bad usage or input."""

from __future__ import annotations

import argparse
import sys


def _bench(args: argparse.Namespace) -> int:
    from unet_fast.bench.reference import run_reference_bench

    return run_reference_bench(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="unet-fast", description="A fused-kernel U-Net inference engine.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, extensions and backends usable here", add_help=False)
    b = sub.add_parser("bench", help="time U-Net inference on this machine")
    b.add_argument("--workload", default="unet64-256", help="workload name (see BENCHMARKING)")
    b.add_argument("--batch", type=int, default=None, help="batch size (default: the workload's)")
    b.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    b.add_argument("--repeats", type=int, default=5, help="timed runs (median reported)")
    b.add_argument("--warmup", type=int, default=1, help="untimed warm-up runs")
    b.add_argument("--seed", type=int, default=0)
    b.set_defaults(func=_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["info"]:
        from unet_fast.info import main as info_main

        return info_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:
        print(f"unet-fast: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
