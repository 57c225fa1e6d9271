"""The legend of a segmentation: which mask value is which class, and its colour in the overlays.

`unet-fast segment` prints it and writes it beside the masks as `legend.json` (for programs) and
`legend.png` (a swatch per class, for people looking at the overlays). The labels follow the model's head
(unet_fast/inference/masks.py): class indices; background / foreground for a one-channel sigmoid; one bit
per label for a multi-label sigmoid."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

from unet_fast.inference.masks import kind_of, mask_labels
from unet_fast.inference.model_card import ModelCard

LEGEND_JSON = "legend.json"
LEGEND_PNG = "legend.png"

_MASK_TEXT = {
    "classes": "palette PNG; pixel value = class index (argmax over the model's classes)",
    "binary": "palette PNG; pixel value 1 = the class (model output > threshold), 0 = background",
    "multilabel": "palette PNG; pixel value = sum of the values (bits, 2**k) of the labels present "
    "(model output k > threshold); 0 = none",
}
_HEADINGS = {
    "classes": "legend (mask value: class, overlay colour): ",
    "binary": "legend (mask value: class, overlay colour): ",
    "multilabel": "legend (mask bit value: label, overlay colour; a pixel holds the sum of its labels' bits): ",
}


def legend_entries(card: ModelCard) -> list[dict]:
    """One entry per mask label: mask value (multi-label: the label's bit value), name, overlay colour
    ([r, g, b] and #rrggbb), and whether the overlay tints it (the background is left as the image)."""
    entries = []
    for label in mask_labels(card):
        entry = {"value": label.value, "name": label.name, "rgb": list(label.rgb),
                 "hex": "#{:02x}{:02x}{:02x}".format(*label.rgb), "tinted_in_overlay": label.tinted}  # fmt: skip
        if kind_of(card) == "multilabel":
            entry["bit"] = label.value.bit_length() - 1
        entries.append(entry)
    return entries


def format_legend(card: ModelCard) -> str:
    """`legend (mask value: class, overlay colour): 0 background #000000 (not tinted), 1 cell #e6194b, ...`"""
    parts = [f"{e['value']} {e['name']} {e['hex']}" + ("" if e["tinted_in_overlay"] else " (not tinted)")
             for e in legend_entries(card)]  # fmt: skip
    return _HEADINGS[kind_of(card)] + ", ".join(parts)


def write_legend(card: ModelCard, out_dir: str | Path) -> list[Path]:
    """Write legend.json and legend.png into `out_dir`; returns their paths. OSError if it cannot write."""
    out_dir = Path(out_dir)
    entries = legend_entries(card)
    kind = kind_of(card)
    json_path = out_dir / LEGEND_JSON
    json_path.write_text(json.dumps({"classes": entries, "mask": _MASK_TEXT[kind], "kind": kind,
                                     "overlay": "image with each non-background value tinted its colour"},
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
