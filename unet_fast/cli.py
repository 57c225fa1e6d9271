"""The `unet-fast` command line. Exit codes (unet_fast/commands/__init__.py): 0 success, 1 the run could
not go on, 2 bad usage (nothing done), 3 some inputs failed (the others done: `segment`).

Each subcommand lives in unet_fast/commands/<name>.py and exposes `register(subparsers)`, which adds its
parser and sets `func=run` (a callable taking the parsed args and returning an exit code)."""

from __future__ import annotations

import argparse
import importlib
import sys

from unet_fast.commands import EXIT_USAGE

COMMANDS = ("info", "bench", "export", "segment", "serve", "train_demo")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="unet-fast", description="A fused-kernel U-Net inference engine.")
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"unet_fast.commands.{name}").register(sub)
    _say_defaults(p)
    return p


def _version() -> str:
    import torch

    import unet_fast

    return f"unet-fast {unet_fast.__version__} (torch {torch.__version__}, Python {sys.version.split()[0]})"


def _say_defaults(parser: argparse.ArgumentParser) -> None:
    """Every option of every command says its default in --help: options whose help does not mention one
    get "(default: X)" appended (flags are off unless given; required options have none)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                _say_defaults(child)
            continue
        quiet = (argparse._HelpAction, argparse._VersionAction, argparse._StoreTrueAction, argparse._StoreFalseAction)
        if not action.option_strings or action.required or isinstance(action, quiet):
            continue
        text = action.help or ""
        if "default" not in text.lower():
            shown = "none" if action.default is None else action.default
            action.help = f"{text} (default: {shown})".strip()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError) as e:
        print(f"unet-fast {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
