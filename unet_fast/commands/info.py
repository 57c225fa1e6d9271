"""`unet-fast info`: what is built and usable here."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="versions, extensions and backends usable here, and why not")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON (default: text for people)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unet_fast.info import main

    return main(["--json"] if args.json else [])
