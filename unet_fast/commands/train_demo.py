"""`unet-fast train-demo`: retrain the bundled demo U-Net on the seeded shapes data set
(unet_fast/demo/train.py; the defaults are what made the shipped weights)."""

from __future__ import annotations

import argparse
import shlex
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-demo", help="train the demo U-Net on the procedural shapes data set",
                       description="Train the demo U-Net (5 classes: background, cell, rectangle, triangle, "
                       "line) on seeded procedural images; writes demo_unet.pt and demo_unet.json "
                       "(config, normalisation, seed, command, validation IoU).")  # fmt: skip
    from unet_fast.demo.train import add_arguments

    add_arguments(p)
    for action in p._actions:  # what the options without their own help text mean
        if action.help is None and action.dest in _HELP:
            action.help = _HELP[action.dest]
    p.set_defaults(func=run)


_HELP = {
    "batch_size": "training images per optimizer step",
    "train_images": "procedural training images (seeded, generated once)",
    "val_images": "validation images (seeded apart from the training images)",
    "base_channels": "width of the U-Net's first level",
    "depth": "U-Net levels (2x2 pools)",
    "log_every": "print the loss every this many steps",
}


def run(args: argparse.Namespace) -> int:
    from unet_fast.demo.train import train

    for name in ("steps", "batch_size", "train_images", "val_images", "image_size", "val_size", "threads"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    train(args, "unet-fast " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["train-demo"]
          else "unet-fast train-demo (called from Python)")  # fmt: skip
    return 0
