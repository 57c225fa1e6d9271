"""Image size limits checked from the file header, before a single pixel is decoded: a 100k x 100k TIFF
must become an error row (or an HTTP 413), not an out-of-memory kill of the worker that holds the model."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

# 2**28 pixels (16384 x 16384): a whole-slide tile or satellite scene of that size takes ~3 GiB of blended
# fp32 probabilities for a 5-class model; bigger inputs should be tiled before they reach a worker.
DEFAULT_MAX_PIXELS = 1 << 28


class ImageTooLargeError(ValueError):
    """The image has more pixels than the limit (HTTP 413 in `unet-fast serve`)."""


def header_pixels(path: str | Path) -> int | None:
    """H * W read from the header (Pillow opens lazily; `.npy` through a memory map), or None when the
    header cannot be read: then the decoder itself reports what is wrong with the file."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
            return int(shape[0]) * int(shape[1]) if len(shape) >= 2 else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return int(im.size[0]) * int(im.size[1])
    except Image.DecompressionBombError as e:  # Pillow refuses > 2x its own limit already at open
        raise ImageTooLargeError(f"{path}: {e}") from None
    except Exception:  # unreadable headers are the decoder's to report, with its message
        return None


def check_pixels(path: str | Path, max_pixels: int | None) -> None:
    """ImageTooLargeError when the header says the image has more than `max_pixels` pixels."""
    if max_pixels is None:
        return
    n = header_pixels(path)
    if n is not None and n > max_pixels:
        raise ImageTooLargeError(f"{Path(path).name}: the image has {n} pixels, more than the limit of "
                                 f"{max_pixels} (max_pixels)")  # fmt: skip
