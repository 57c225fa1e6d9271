"""Reading images for a U-Net and writing its masks and overlays.

Inputs: PNG (1/8/16-bit gray, gray+alpha, RGB, RGBA, palette), TIFF (little- or big-endian; 8/16/32-bit
integers, 16/32/64-bit floats; gray, RGB(A) or 2-4 samples, contiguous or planar), JPEG, BMP, and NumPy
`.npy` arrays (HxW or HxWxC). The same pixel data reads to the same array whatever the container:

- TIFF: tifffile (a maintained TIFF library: every byte order, bit depth and planar layout, no silent
  narrowing); a compression it needs the optional `imagecodecs` package for (LZW, JPEG) falls back to Pillow.
- PNG with 16 bits per sample and colour (RGB, RGBA, gray+alpha): pypng, because Pillow narrows those to 8
  bits. Other PNGs, JPEG, BMP: Pillow, with its 16-bit gray modes (I;16, I;16B, ...) decoded from the raw
  bytes at their own byte order; Pillow's `convert("I;16")` clips big-endian values to 255.

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
TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = (*PILLOW_SUFFIXES, ".npy")

# Pillow modes that hold one 16-bit sample per pixel, with the byte order of their raw data.
_PILLOW_16BIT = {"I;16": "<u2", "I;16L": "<u2", "I;16B": ">u2", "I;16N": "=u2", "I;16S": "<i2",
                 "I;16LS": "<i2", "I;16BS": ">i2", "I;16NS": "=i2"}  # fmt: skip
# Pillow modes np.array() maps to an array without loss.
_PILLOW_DIRECT = ("L", "LA", "RGB", "RGBA", "I", "F")
# Modes whose pixels are a colour model other than RGB: converted to RGB (8-bit, as they are stored).
_PILLOW_TO_RGB = ("CMYK", "YCbCr", "LAB", "HSV")


def read_image(path: str | Path) -> np.ndarray:
    """Read `path` as float32 [H, W, C] with C in 1..4 (gray, gray+alpha, RGB, RGBA).

    Raises FileNotFoundError for a missing file, ValueError for an unreadable or unsupported one (the
    message names the file and what is wrong: type, pixel mode, stack, channel count)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} not found")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except Exception as e:
            raise ValueError(f"cannot read {path} as a NumPy array: {e}") from None
    elif suffix in TIFF_SUFFIXES:
        array = _read_tiff(path)
    elif suffix == ".png" and _png_needs_pypng(path):
        array = _read_png16(path)
    elif suffix in PILLOW_SUFFIXES:
        array = _read_with_pillow(path)
    else:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; expected one of {IMAGE_SUFFIXES}")
    return to_unit_range(_as_hwc(array, path), path)


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes, array = series.axes, series.asarray()
    except ValueError as e:
        if "imagecodecs" in str(e):  # LZW, JPEG, ... without the optional codec package: Pillow has them
            return _read_with_pillow(path, tiff_codec_error=str(e))
        raise ValueError(f"cannot read {path} as a TIFF image: {e}") from None
    except (OSError, IndexError, tifffile.TiffFileError) as e:
        raise ValueError(f"cannot read {path} as a TIFF image: {e}") from None
    return _tiff_to_hwc(array, axes, path)


def _tiff_to_hwc(array: np.ndarray, axes: str, path: Path) -> np.ndarray:
    """tifffile's array with its axes string (e.g. 'YX', 'YXS', 'SYX', 'CYX') -> [H, W] or [H, W, C]."""
    if len(axes) != array.ndim or "Y" not in axes or "X" not in axes:
        raise ValueError(f"{path}: unexpected TIFF layout (axes {axes!r}, shape {array.shape})")
    channel_axes = [i for i, a in enumerate(axes) if a in "SC" and array.shape[i] > 1]
    stack = [array.shape[i] for i, a in enumerate(axes) if a not in "YXSC" and array.shape[i] > 1]
    if stack or len(channel_axes) > 1:
        what = f"{int(np.prod(stack))} frames (a stack)" if stack else "two channel axes"
        raise ValueError(f"{path} holds {what}: axes {axes!r}, shape {tuple(array.shape)}; expected a single "
                         "2-D image")  # fmt: skip
    order = [axes.index("Y"), axes.index("X"), *channel_axes]
    keep = [i for i in range(array.ndim) if i in order]
    array = array.reshape([array.shape[i] for i in keep])  # drops the size-1 axes
    return np.ascontiguousarray(array.transpose([keep.index(i) for i in order]))


def _png_needs_pypng(path: Path) -> bool:
    """16-bit PNGs (IHDR bit depth 16): Pillow narrows the colour ones to 8 bits, and older Pillows open
    16-bit gray as 32-bit 'I' (whose unit would then be 2^31 - 1, not 65535)."""
    with path.open("rb") as f:
        head = f.read(26)
    return len(head) == 26 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[24] == 16


def _read_png16(path: Path) -> np.ndarray:
    import png  # pypng

    try:
        width, height, rows, info = png.Reader(filename=str(path)).asDirect()
        array = np.vstack([np.asarray(row, np.uint16) for row in rows])
    except png.Error as e:
        raise ValueError(f"cannot read {path} as a PNG image: {e}") from None
    return array.reshape(height, width, info["planes"])


def _pillow_tiff_is_exact(im: Image.Image) -> bool:
    """Whether Pillow decodes this TIFF without narrowing: it reads 16-bit colour as 8-bit RGB and unsigned
    32-bit as signed 'I'."""
    tags = getattr(im, "tag_v2", {})
    bits = tags.get(258, (8,))
    bits = bits if isinstance(bits, tuple) else (bits,)
    unsigned32 = max(bits) == 32 and tags.get(339, (1,)) in (1, (1,)) and im.mode == "I"
    return not ((max(bits) > 8 and im.mode not in _PILLOW_16BIT and im.mode not in ("I", "F")) or unsigned32)


def _read_with_pillow(path: Path, tiff_codec_error: str = "") -> np.ndarray:
    try:
        with Image.open(path) as im:
            if getattr(im, "n_frames", 1) > 1:
                raise ValueError(f"{path} holds {im.n_frames} frames (a stack); expected a single 2-D image")
            if tiff_codec_error and not _pillow_tiff_is_exact(im):
                raise ValueError(f"{path}: tifffile {tiff_codec_error} for this compression, and Pillow would "
                                 f"narrow its {im.tag_v2.get(258)}-bit samples: pip install imagecodecs")  # fmt: skip
            if im.mode == "P":  # palette images: their colours are the image
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif im.mode == "PA":
                im = im.convert("RGBA")
            elif im.mode == "1":
                im = im.convert("L")
            elif im.mode in _PILLOW_TO_RGB:
                im = im.convert("RGB")
            if im.mode in _PILLOW_16BIT:
                # Never convert(): Pillow clips big-endian 16-bit values to 255 there. The raw bytes are
                # exact; read them at the mode's own byte order and make the result native.
                raw = np.frombuffer(im.tobytes(), dtype=_PILLOW_16BIT[im.mode])
                return raw.reshape(im.size[1], im.size[0]).astype(raw.dtype.newbyteorder("="))
            if im.mode not in _PILLOW_DIRECT:
                raise ValueError(f"{path}: unsupported pixel mode {im.mode!r}; expected gray, gray+alpha, RGB "
                                 "or RGBA with 1-16 bit integer or 32-bit float samples")  # fmt: skip
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
