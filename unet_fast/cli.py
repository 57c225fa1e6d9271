"""The `unet-fast` command line. Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad input.

Each subcommand lives in unet_fast/commands/<name>.py and exposes `register(subparsers)`, which adds its
parser and sets `func=run` (a callable taking the parsed args and returning an exit code)."""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("info", "bench", "export", "segment", "serve", "train_demo")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="unet-fast", description="A fused-kernel U-Net inference engine.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"unet_fast.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"unet_fast.commands.{name}":
                raise
            continue  # not written yet
        module.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError) as e:
        print(f"unet-fast {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
