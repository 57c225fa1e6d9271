"""The bundled demo image: one seeded draw from the shapes generator, larger than the 128-pixel patch
(and not a multiple of it) so `unet-fast segment --demo` exercises sliding-window inference. Its ground
truth is shipped beside it, so anyone can score the demo model on it.

    python -m unet_fast.demo.demo_image [OUT_DIR]     # rewrites demo_image.png and demo_image_label.png
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from unet_fast.demo.shapes import draw_sample

DEMO_SEED = 7
DEMO_SIZE = (320, 384)  # (H, W)


def make_demo_image(out_dir: str | Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    image, label = draw_sample(np.random.default_rng(DEMO_SEED), *DEMO_SIZE)
    image_path, label_path = out_dir / "demo_image.png", out_dir / "demo_image_label.png"
    Image.fromarray(image).save(image_path, optimize=True)
    Image.fromarray(label).save(label_path, optimize=True)  # class indices 0..4 as 8-bit gray
    return image_path, label_path


if __name__ == "__main__":
    for p in make_demo_image(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent.parent / "assets"):
        print(f"wrote {p}")
