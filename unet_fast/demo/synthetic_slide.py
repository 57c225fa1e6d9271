"""Synthetic whole-slide images for tests and benchmarks: a tiled, deflate-compressed, pyramidal BigTIFF of any
size, written tile by tile (memory: a few tiles), mostly flat background with scattered "tissue" tiles drawn
by the demo data set's generator (`shapes.draw_sample`, so the bundled demo model finds objects in them).

    python -m unet_fast.demo.synthetic_slide out.tif --size 20000 20000 --tissue 0.02

Which tiles hold tissue and what they show depends only on (seed, tile row, tile column), so any region can
be regenerated (`expected_region`) to check a reader without holding the slide.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from unet_fast.demo.shapes import ShapeStyle, draw_sample

BACKGROUND = 31  # uint8 level of the empty field (0.12 of full scale, inside the demo data's range)
_STYLE = ShapeStyle(background=(BACKGROUND / 255, BACKGROUND / 255))


def is_tissue(seed: int, ty: int, tx: int, fraction: float) -> bool:
    rng = np.random.default_rng([seed, ty, tx, 1])
    return bool(rng.random() < fraction)


def tile_pixels(seed: int, ty: int, tx: int, tile: int, fraction: float) -> np.ndarray:
    """Level-0 tile (ty, tx): uint8 [tile, tile]."""
    if not is_tissue(seed, ty, tx, fraction):
        return np.full((tile, tile), BACKGROUND, np.uint8)
    image, _ = draw_sample(np.random.default_rng([seed, ty, tx, 2]), tile, tile, _STYLE)
    return image


def expected_region(seed: int, y: int, x: int, h: int, w: int, tile: int, fraction: float) -> np.ndarray:
    """What level 0 holds at [y, y + h) x [x, x + w) (for tests)."""
    out = np.empty((h, w), np.uint8)
    for ty in range(y // tile, (y + h - 1) // tile + 1):
        for tx in range(x // tile, (x + w - 1) // tile + 1):
            t = tile_pixels(seed, ty, tx, tile, fraction)
            y0, x0 = ty * tile, tx * tile
            sy0, sy1, sx0, sx1 = max(y, y0), min(y + h, y0 + tile), max(x, x0), min(x + w, x0 + tile)
            out[sy0 - y : sy1 - y, sx0 - x : sx1 - x] = t[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0]
    return out


def _level_tiles(
    seed: int, shape: tuple[int, int], tile: int, fraction: float, level: int
) -> Iterator[np.ndarray]:
    """Tiles of pyramid level `level` (2^level subsampling of level 0), row-major."""
    k = 1 << level
    h, w = math.ceil(shape[0] / k), math.ceil(shape[1] / k)
    flat = np.full((tile, tile), BACKGROUND, np.uint8)
    for ty in range(math.ceil(h / tile)):
        for tx in range(math.ceil(w / tile)):
            # level-0 tiles under this one: if none is tissue, the tile is flat
            r0, r1 = ty * k, min((ty + 1) * k, math.ceil(shape[0] / tile))
            c0, c1 = tx * k, min((tx + 1) * k, math.ceil(shape[1] / tile))
            if not any(is_tissue(seed, r, c, fraction) for r in range(r0, r1) for c in range(c0, c1)):
                yield flat
                continue
            block = np.full((tile * k, tile * k), BACKGROUND, np.uint8)
            for r in range(r0, r1):
                for c in range(c0, c1):
                    if is_tissue(seed, r, c, fraction):
                        block[(r - r0) * tile : (r - r0 + 1) * tile, (c - c0) * tile : (c - c0 + 1) * tile] = (
                            tile_pixels(seed, r, c, tile, fraction))  # fmt: skip
            yield np.ascontiguousarray(block[::k, ::k])


def synthetic_slide(path: str | Path, height: int, width: int, *, tile: int = 256, tissue: float = 0.02,
                    seed: int = 0, pyramid: bool = True) -> Path:  # fmt: skip
    """Write a height x width uint8 grayscale slide to `path` (OME BigTIFF, `tile` x `tile` deflate tiles,
    2x pyramid levels in SubIFDs down to one tile when `pyramid`). `tissue`: the fraction of tiles with
    objects. Returns the path."""
    import tifffile

    path = Path(path)
    levels = 0
    while (
        pyramid and max(math.ceil(height / 2 ** (levels + 1)), math.ceil(width / 2 ** (levels + 1))) >= tile
    ):
        levels += 1
    opts = {"tile": (tile, tile), "compression": "zlib", "photometric": "minisblack", "dtype": np.uint8}
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tw:
        tw.write(_level_tiles(seed, (height, width), tile, tissue, 0), shape=(height, width), subifds=levels,
                 metadata={"axes": "YX", "Name": "synthetic slide"}, **opts)  # fmt: skip
        for lv in range(1, levels + 1):
            shape = (math.ceil(height / 2**lv), math.ceil(width / 2**lv))
            tw.write(
                _level_tiles(seed, (height, width), tile, tissue, lv), shape=shape, subfiletype=1, **opts
            )
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out")
    p.add_argument("--size", type=int, nargs=2, default=(4096, 4096), metavar=("H", "W"))
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--tissue", type=float, default=0.02, help="fraction of tiles with objects (default 0.02)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    print(synthetic_slide(a.out, a.size[0], a.size[1], tile=a.tile, tissue=a.tissue, seed=a.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
