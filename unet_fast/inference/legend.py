"""The class legend of a segmentation: which mask value is which class, and its colour in the overlays.

`unet-fast segment` prints it and writes it beside the masks as `legend.json` (for programs) and
`legend.png` (a swatch per class, for people looking at the overlays)."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

from unet_fast.inference.model_card import ModelCard

LEGEND_JSON = "legend.json"
LEGEND_PNG = "legend.png"


def legend_entries(card: ModelCard) -> list[dict]:
    """One entry per class: mask value, name, overlay colour ([r, g, b] and #rrggbb), and whether the
    overlay tints it (class 0, the background, is left as the image)."""
    return [{"value": i, "name": name, "rgb": [int(v) for v in rgb], "hex": "#{:02x}{:02x}{:02x}".format(*rgb),
             "tinted_in_overlay": i != 0}
            for i, (name, rgb) in enumerate(zip(card.class_names, card.palette, strict=True))]  # fmt: skip


def format_legend(card: ModelCard) -> str:
    """`legend (mask value: class, overlay colour): 0 background #000000 (not tinted), 1 cell #e6194b, ...`"""
    parts = [f"{e['value']} {e['name']} {e['hex']}" + ("" if e["tinted_in_overlay"] else " (not tinted)")
             for e in legend_entries(card)]  # fmt: skip
    return "legend (mask value: class, overlay colour): " + ", ".join(parts)


def write_legend(card: ModelCard, out_dir: str | Path) -> list[Path]:
    """Write legend.json and legend.png into `out_dir`; returns their paths. OSError if it cannot write."""
    out_dir = Path(out_dir)
    entries = legend_entries(card)
    json_path = out_dir / LEGEND_JSON
    json_path.write_text(json.dumps({"classes": entries, "mask": "palette PNG; pixel value = class index",
                                     "overlay": "image with each non-background class tinted its colour"},
                                    indent=2) + "\n")  # fmt: skip
    row, swatch, pad = 24, 18, 6
    width = 2 * pad + swatch + 8 + 8 * max(len(f"{e['value']}  {e['name']}  {e['hex']}") for e in entries)
    im = Image.new("RGB", (width, pad + row * len(entries)), (255, 255, 255))
    draw = ImageDraw.Draw(im)
    for i, e in enumerate(entries):
        top = pad + i * row
        draw.rectangle([pad, top, pad + swatch, top + swatch], fill=tuple(e["rgb"]), outline=(0, 0, 0))
        draw.text((pad + swatch + 8, top + 3), f"{e['value']}  {e['name']}  {e['hex']}", fill=(0, 0, 0))
    png_path = out_dir / LEGEND_PNG
    im.save(png_path)
    return [json_path, png_path]
