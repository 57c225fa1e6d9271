"""Background tile skipping for whole slides: a cheap foreground test at a low pyramid level.

Most of a slide is glass (bright, brightfield) or empty field (dark, fluorescence). A pixel is *foreground*
when one of its channels differs from the slide's background level by more than `threshold` (unit range:
integer samples divided by their dtype's maximum); a tile whose foreground fraction is below `min_fraction`
is not segmented and is written as class 0. The background level is the per-channel median of a low-
resolution view of the slide (mostly background by assumption) unless given. The test runs on the most
downsampled pyramid level that still has `min_pixels` pixels along a tile's side (level 0 when the slide
has no pyramid). Opt-in; the threshold, fraction, level and background go into the output's metadata.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from unet_fast.inference.image_io import to_unit_range
from unet_fast.inference.slide_io import Slide

__all__ = ["TissueTest", "make_tissue_test"]


@dataclass(frozen=True)
class TissueTest:
    threshold: float
    min_fraction: float
    background: tuple[float, ...]
    level: int
    downsample: tuple[float, float]  # level-0 pixels per test-level pixel (y, x)

    def fraction(self, slide: Slide, y0: int, y1: int, x0: int, x1: int) -> float:
        """Foreground fraction of level-0 box [y0, y1) x [x0, x1), measured at the test level."""
        lh, lw = slide.levels[self.level]
        ty0, ty1 = (
            int(y0 / self.downsample[0]),
            max(int(y0 / self.downsample[0]) + 1, math.ceil(y1 / self.downsample[0])),
        )
        tx0, tx1 = (
            int(x0 / self.downsample[1]),
            max(int(x0 / self.downsample[1]) + 1, math.ceil(x1 / self.downsample[1])),
        )
        ty1, tx1 = min(ty1, lh), min(tx1, lw)
        region = slide.read(ty0, tx0, ty1 - ty0, tx1 - tx0, self.level)
        if self.level == 0:  # full resolution: every 4th pixel is plenty for a fraction
            region = region[::4, ::4]
        return foreground_fraction(to_unit_range(region), self.background, self.threshold)

    def to_json(self) -> dict:
        return {**asdict(self), "rule": "a pixel is foreground when a channel differs from the background by more "
                "than threshold (unit range); tiles with a smaller foreground fraction than min_fraction are not "
                "segmented and are written as class 0"}  # fmt: skip


def foreground_fraction(unit: np.ndarray, background: tuple[float, ...], threshold: float) -> float:
    bg = np.asarray(background, np.float32)[: unit.shape[2]]
    fg = (np.abs(unit - bg) > threshold).any(axis=2)
    return float(fg.mean()) if fg.size else 0.0


def _test_level(slide: Slide, core: int, min_pixels: int) -> int:
    h0 = slide.levels[0][0]
    best = 0
    for i, (h, _) in enumerate(slide.levels):
        if core * h / h0 >= min_pixels:
            best = i
    return best


def _background(slide: Slide, level: int, samples: int = 64, size: int = 64) -> tuple[float, ...]:
    lh, lw = slide.levels[level]
    if lh * lw <= 1 << 22:  # a small level: all of it
        view = to_unit_range(slide.read(0, 0, lh, lw, level))
    else:  # evenly spread patches
        n = max(1, int(math.sqrt(samples)))
        ph, pw = min(size, lh), min(size, lw)
        patches = [to_unit_range(slide.read(int(i * (lh - ph) / max(1, n - 1)), int(j * (lw - pw) / max(1, n - 1)),
                                             ph, pw, level)) for i in range(n) for j in range(n)]  # fmt: skip
        view = np.concatenate([p.reshape(-1, p.shape[2]) for p in patches])[:, None, :]
    return tuple(float(v) for v in np.median(view.reshape(-1, view.shape[2]), axis=0))


def make_tissue_test(slide: Slide, core: int, threshold: float, min_fraction: float = 0.0,
                     background: tuple[float, ...] | None = None, min_pixels: int = 16) -> TissueTest:  # fmt: skip
    """The foreground test for `slide` and tiles of `core` level-0 pixels. `threshold` in (0, 1];
    `min_fraction` in [0, 1): tiles with foreground fraction <= min_fraction are skipped (0: only tiles with no
    foreground pixel at all)."""
    if not 0 < threshold <= 1:
        raise ValueError(f"tissue threshold must be in (0, 1], got {threshold}")
    if not 0 <= min_fraction < 1:
        raise ValueError(f"tissue min_fraction must be in [0, 1), got {min_fraction}")
    level = _test_level(slide, core, min_pixels)
    bg = tuple(background) if background is not None else _background(slide, level)
    h0, w0 = slide.levels[0]
    lh, lw = slide.levels[level]
    return TissueTest(float(threshold), float(min_fraction), bg, level, (h0 / lh, w0 / lw))
