"""Subcommands of `unet-fast`, one module each (see unet_fast/cli.py)."""
