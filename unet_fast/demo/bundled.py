"""Paths of what ships in the package: the demo U-Net's weights, its model card, and a demo image."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEMO_WEIGHTS = ASSETS / "demo_unet.pt"
DEMO_CARD = ASSETS / "demo_unet.json"
DEMO_IMAGE = ASSETS / "demo_image.png"
DEMO_LABEL = ASSETS / "demo_image_label.png"  # the generator's ground truth for the demo image


def require(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"bundled file {path} is missing (a broken install? reinstall unet_fast, or "
                                f"regenerate it with `unet-fast train-demo`)")  # fmt: skip
    return path
