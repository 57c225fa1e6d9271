"""Reading images for a U-Net and writing its masks and overlays.

Inputs: PNG, TIFF (8/16-bit, float), JPEG, BMP through Pillow, and NumPy `.npy` arrays (HxW or HxWxC).
Every reader returns a float32 array [H, W, C] in [0, 1]-ish units: integer images are divided by their
dtype's maximum (255 for 8-bit, 65535 for 16-bit), float images are kept as they are. Channel counts are
then matched to the model by fixed rules (`match_channels`); anything else is a ValueError.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

PILLOW_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
IMAGE_SUFFIXES = (*PILLOW_SUFFIXES, ".npy")


def read_image(path: str | Path) -> np.ndarray:
    """Read `path` as float32 [H, W, C] with C in 1..4 (gray, gray+alpha, RGB, RGBA)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} not found")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except Exception as e:
            raise ValueError(f"cannot read {path} as a NumPy array: {e}") from None
    elif suffix in PILLOW_SUFFIXES:
        array = _read_with_pillow(path)
    else:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; expected one of {IMAGE_SUFFIXES}")
    return to_unit_range(_as_hwc(array, path), path)


def _read_with_pillow(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            if getattr(im, "n_frames", 1) > 1:
                raise ValueError(f"{path} holds {im.n_frames} frames (a stack); expected a single 2-D image")
            if im.mode == "P":  # palette images: their colours are the image
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif im.mode == "1":
                im = im.convert("L")
            elif im.mode in ("I;16B", "I;16L", "I;16N"):
                im = im.convert("I;16")
            elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGB")
            return np.array(im)
    except (OSError, SyntaxError) as e:  # Pillow's "cannot identify image file" and truncated files
        raise ValueError(f"cannot read {path} as an image: {e}") from None


def _as_hwc(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or not 1 <= array.shape[2] <= 4:
        raise ValueError(f"{path}: expected an H x W or H x W x C image with C in 1..4 channels, got shape "
                         f"{tuple(array.shape)}")  # fmt: skip
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"{path}: the image is empty (shape {tuple(array.shape)})")
    return array


def to_unit_range(array: np.ndarray, name: str | Path = "image") -> np.ndarray:
    """Integers -> divided by the dtype's maximum; bool -> 0/1; floats unchanged (must be finite)."""
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.integer):
        return (array.astype(np.float64) / np.iinfo(array.dtype).max).astype(np.float32)
    if np.issubdtype(array.dtype, np.floating):
        out = array.astype(np.float32)
        if not np.isfinite(out).all():
            raise ValueError(f"{name}: the image contains NaN or infinite values")
        return out
    raise ValueError(f"{name}: unsupported pixel type {array.dtype}; expected integers, bool or floats")


def match_channels(image: np.ndarray, in_channels: int, name: str | Path = "image") -> np.ndarray:
    """Fit [H, W, C] to a model's input channels. Alpha (the 2nd of 2 or the 4th of 4) is dropped; a
    1-channel model takes RGB as luminance (ITU-R 601, Pillow's "L"); a 3-channel model takes gray
    repeated. Any other combination is a ValueError naming both counts."""
    c = image.shape[2]
    if c in (2, 4):
        image, c = image[:, :, : c - 1], c - 1
    if c == in_channels:
        return np.ascontiguousarray(image)
    if in_channels == 1 and c == 3:
        return (image @ np.array([0.299, 0.587, 0.114], np.float32))[:, :, None]
    if in_channels == 3 and c == 1:
        return np.repeat(image, 3, axis=2)
    raise ValueError(f"{name}: the model takes {in_channels} channel(s), the image has {image.shape[2]}")


def normalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(x - mean) / std per channel, [H, W, C] -> [C, H, W] float32 (what the model takes)."""
    x = (image - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def display_rgb(image: np.ndarray) -> np.ndarray:
    """[H, W, C] unit-range image -> uint8 RGB for viewing: alpha dropped, gray repeated, and the range
    stretched to the 0.5/99.5 percentiles (a dim 12-bit microscope image should not render black)."""
    c = image.shape[2]
    rgb = image[:, :, : c - 1] if c in (2, 4) else image
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    lo, hi = np.percentile(rgb, [0.5, 99.5])
    scaled = (rgb - lo) / (hi - lo) if hi > lo else np.zeros_like(rgb)
    return (np.clip(scaled, 0, 1) * 255 + 0.5).astype(np.uint8)


def write_mask(mask: np.ndarray, palette: Sequence[Sequence[int]], path: str | Path) -> None:
    """A palette PNG whose pixel values are the class indices (uint8) and whose colours are `palette`."""
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(f"write_mask expects a uint8 [H, W] class map, got {mask.dtype} {tuple(mask.shape)}")
    im = Image.frombytes("P", (mask.shape[1], mask.shape[0]), np.ascontiguousarray(mask).tobytes())
    flat = [int(v) for colour in palette for v in colour]
    im.putpalette(flat + [0] * (768 - len(flat)))
    im.save(path, optimize=True)


def overlay(image: np.ndarray, mask: np.ndarray, palette: Sequence[Sequence[int]],
            alpha: float = 0.5) -> np.ndarray:  # fmt: skip
    """uint8 RGB [H, W, 3]: the image (display_rgb) with each non-background class tinted its colour."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    base = display_rgb(image).astype(np.float32)
    colours = np.asarray(palette, np.float32)[mask]
    tint = (mask > 0)[:, :, None] * alpha
    return (base * (1 - tint) + colours * tint + 0.5).astype(np.uint8)


def write_rgb(rgb: np.ndarray, path: str | Path) -> None:
    Image.fromarray(rgb).save(path, optimize=True)
