"""Reading images for a U-Net and writing its masks and overlays.

Inputs: PNG (1/8/16-bit gray, gray+alpha, RGB, RGBA, palette), TIFF (little- or big-endian; 8/16/32-bit
integers, 16/32/64-bit floats; gray, RGB(A) or 2-4 samples, contiguous or planar), JPEG, BMP, and NumPy
`.npy` arrays (HxW or HxWxC). The same pixel data reads to the same array whatever the container:

- TIFF: tifffile (a maintained TIFF library: every byte order, bit depth and planar layout, no silent
  narrowing); a compression it needs the optional `imagecodecs` package for (LZW, JPEG) falls back to Pillow.
- PNG with 16 bits per sample and colour (RGB, RGBA, gray+alpha): pypng, because Pillow narrows those to 8
  bits. Other PNGs, JPEG, BMP: Pillow, with its 16-bit gray modes (I;16, I;16B, ...) decoded from the raw
  bytes at their own byte order; Pillow's `convert("I;16")` clips big-endian values to 255.

- EXIF / TIFF orientation (tag 274, as phone cameras write it into JPEG, TIFF, PNG eXIf and WebP) is
  applied: the array, and so the mask, is in the orientation every viewer displays, not in stored order.
- Size: the header is read first and the image refused (ImageTooLargeError) when decoding it would not fit
  in the memory available (a caller such as `Segmenter` passes a check for the whole segmentation), instead
  of Pillow's fixed decompression-bomb limit; a .npy or TIFF header claiming more data than the file holds
  is refused before anything is allocated.

Every reader returns a float32 array [H, W, C] in [0, 1]-ish units: integer images are divided by their
dtype's maximum (255 for 8-bit, 65535 for 16-bit), float images are kept as they are. Channel counts are
then matched to the model by fixed rules (`match_channels`); anything else is a ValueError.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, features

from unet_fast.inference.memory import (  # noqa: F401 (ImageTooLargeError: read_image raises it)
    CHUNK_PIXELS,
    ImageHeader,
    ImageTooLargeError,
    check_fits,
    decode_bytes,
)

PILLOW_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp") + ((".webp",) if features.check("webp") else ())
TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = (*PILLOW_SUFFIXES, ".npy")
ORIENTATION_TAG = 0x0112  # EXIF / TIFF Orientation

# Pillow modes that hold one 16-bit sample per pixel, with the byte order of their raw data.
_PILLOW_16BIT = {"I;16": "<u2", "I;16L": "<u2", "I;16B": ">u2", "I;16N": "=u2", "I;16S": "<i2",
                 "I;16LS": "<i2", "I;16BS": ">i2", "I;16NS": "=i2"}  # fmt: skip
# Pillow modes np.array() maps to an array without loss.
_PILLOW_DIRECT = ("L", "LA", "RGB", "RGBA", "I", "F")
# Modes whose pixels are a colour model other than RGB: converted to RGB (8-bit, as they are stored).
_PILLOW_TO_RGB = ("CMYK", "YCbCr", "LAB", "HSV")


def read_image(path: str | Path, *, check: Callable[[ImageHeader], None] | None = None) -> np.ndarray:
    """Read `path` as float32 [H, W, C] with C in 1..4 (gray, gray+alpha, RGB, RGBA), in the displayed
    orientation (the EXIF / TIFF Orientation tag applied).

    `check(header)` runs on the header before any pixel is decoded and may raise to refuse the image
    (`Segmenter.check_fits` refuses what the segmentation would not have the memory for); by default the
    decode alone must fit in the memory available.

    Raises FileNotFoundError for a missing file, ImageTooLargeError (a ValueError) for an image that does
    not fit, ValueError for an unreadable or unsupported one (the message names the file and what is wrong:
    type, pixel mode, stack, channel count, truncation, permissions)."""
    path = Path(path)
    header = read_header(path)
    (check or check_decode)(header)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array, tag = np.load(path, allow_pickle=False), 1
        except Exception as e:
            raise ValueError(f"cannot read {path} as a NumPy array: {e}") from None
    elif suffix in TIFF_SUFFIXES:
        array, tag = _read_tiff(path, header)
    elif suffix == ".png" and _png_needs_pypng(path):
        array, tag = _read_png16(path), _png_orientation(path, header)
    else:
        array, tag = _read_with_pillow(path, header)
    return to_unit_range(_as_hwc(apply_orientation(array, tag), path), path)


def check_decode(header: ImageHeader) -> None:
    """The default size check of `read_image`: decoding must fit in the memory available."""
    check_fits(header, decode_bytes(header), "decode")


def apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """[H, W, ...] as stored -> as displayed, for an EXIF / TIFF Orientation value (1-8; others are taken
    as 1, like Pillow's `ImageOps.exif_transpose`, whose transposes these are: 6 = rotate 90 degrees
    clockwise, 8 = counter-clockwise, 3 = 180, 2 / 4 = mirrored, 5 / 7 = mirrored across a diagonal).
    Returns a C-contiguous array (a copy unless the orientation is 1)."""
    ops = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1),
           7: lambda a: a.swapaxes(0, 1)[::-1, ::-1], 8: lambda a: np.rot90(a, 1)}  # fmt: skip
    op = ops.get(int(orientation))
    return array if op is None else np.ascontiguousarray(op(array))


# -- headers: the size of what will be decoded, before decoding --------------------------------------------


def read_header(path: str | Path) -> ImageHeader:
    """What `read_image` would decode from `path` (size, channels, bytes per sample), from the header
    only. Raises FileNotFoundError (missing), ValueError (not a regular file, empty, unreadable, unsupported
    type, a header that does not describe one 2-D image, a .npy shorter than its header says)."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"image {path} not found") from None
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{path} is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path} is not a regular file")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; expected one of {IMAGE_SUFFIXES}")
    if st.st_size == 0:
        raise ValueError(f"cannot read {path}: the file is empty (0 bytes)")
    if not os.access(path, os.R_OK):
        raise ValueError(f"cannot read {path}: permission denied")
    try:
        if suffix == ".npy":
            return _npy_header(path, st.st_size)
        if suffix in TIFF_SUFFIXES:
            return _tiff_header(path)
        if suffix == ".png" and _png_needs_pypng(path):
            return _png_header(path)
        return _pillow_header(path)
    except PermissionError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None


def _npy_header(path: Path, size: int) -> ImageHeader:
    fmt = np.lib.format
    try:
        with path.open("rb") as f:
            version = fmt.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = fmt.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = fmt.read_array_header_2_0(f)
            else:
                shape, _, dtype = fmt._read_array_header(f, version)
            offset = f.tell()
    except PermissionError:
        raise
    except Exception as e:
        raise ValueError(f"cannot read {path} as a NumPy array: {e}") from None
    if dtype.hasobject:
        raise ValueError(f"{path}: a .npy of Python objects is not an image (and is never unpickled)")
    _check_hwc_shape(tuple(shape), path)
    need = offset + int(np.prod(shape, dtype=object)) * dtype.itemsize
    if need > size:
        raise ValueError(f"cannot read {path} as a NumPy array: its header says {need} bytes ({tuple(shape)} "
                         f"{dtype}), the file holds {size} (truncated)")  # fmt: skip
    return ImageHeader(path, int(shape[0]), int(shape[1]), int(shape[2]) if len(shape) == 3 else 1, dtype.itemsize)


def _tiff_header(path: Path) -> ImageHeader:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, axes, itemsize = tuple(series.shape), series.axes, series.dtype.itemsize
    except PermissionError:
        raise
    except Exception as e:
        raise ValueError(f"cannot read {path} as a TIFF image: {e}") from None
    if "Y" not in axes or "X" not in axes or len(axes) != len(shape):
        raise ValueError(f"{path}: unexpected TIFF layout (axes {axes!r}, shape {shape})")
    h, w = shape[axes.index("Y")], shape[axes.index("X")]
    rest = int(np.prod([n for a, n in zip(axes, shape, strict=True) if a not in "YX"], dtype=object))
    return ImageHeader(path, int(h), int(w), max(1, rest), itemsize)


def _png_header(path: Path) -> ImageHeader:
    """A 16-bit PNG's IHDR: width, height, colour type -> samples per pixel."""
    with path.open("rb") as f:
        head = f.read(26)
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    planes = {0: 1, 2: 3, 4: 2, 6: 4}.get(head[25])
    if planes is None:
        raise ValueError(f"cannot read {path} as a PNG image: colour type {head[25]} at 16 bits")
    return ImageHeader(path, height, width, planes, 2)


# Samples per pixel and bytes per sample of what _read_with_pillow decodes, per Pillow mode.
_MODE_LAYOUT = {"1": (1, 1), "L": (1, 1), "P": (4, 1), "LA": (2, 1), "PA": (4, 1), "RGB": (3, 1), "RGBA": (4, 1),
                "CMYK": (4, 1), "YCbCr": (3, 1), "LAB": (3, 1), "HSV": (3, 1), "I": (1, 4), "F": (1, 4)}  # fmt: skip


def _pillow_header(path: Path) -> ImageHeader:
    try:
        with _pillow_pixel_limit(None), Image.open(path) as im:  # opening reads the header only
            size, mode = im.size, im.mode
    except PermissionError:
        raise
    except Exception as e:  # Pillow's "cannot identify image file", a truncated header
        raise ValueError(f"cannot read {path} as an image: {e}") from None
    channels, itemsize = (1, 2) if mode in _PILLOW_16BIT else _MODE_LAYOUT.get(mode, (4, 4))
    return ImageHeader(path, size[1], size[0], channels, itemsize)


# Pillow's decompression-bomb limit is a process-wide setting (Image.MAX_IMAGE_PIXELS): an error above twice
# it, whatever the memory. Our own check comes first (from the header), so while one of our reads runs the
# limit is raised to that image's pixel count (None: unlimited, for opening a header), and restored after
# the last one. A count of the reads in flight keeps concurrent readers (the server decodes in threads)
# from restoring it under each other.
_pillow_lock = threading.Lock()
_pillow_reads: list[int | None] = []
_pillow_saved: list[int | None] = []


@contextmanager
def _pillow_pixel_limit(pixels: int | None) -> Iterator[None]:
    with _pillow_lock:
        if not _pillow_reads:
            _pillow_saved[:] = [Image.MAX_IMAGE_PIXELS]
        _pillow_reads.append(pixels)
        _apply_pillow_limit()
    try:
        yield
    finally:
        with _pillow_lock:
            _pillow_reads.remove(pixels)
            if _pillow_reads:
                _apply_pillow_limit()
            else:
                Image.MAX_IMAGE_PIXELS = _pillow_saved[0]


def _apply_pillow_limit() -> None:
    saved = _pillow_saved[0]
    if saved is None or None in _pillow_reads:
        Image.MAX_IMAGE_PIXELS = None
    else:
        Image.MAX_IMAGE_PIXELS = max(saved, *(p for p in _pillow_reads if p is not None))


def _read_tiff(path: Path, header: ImageHeader) -> tuple[np.ndarray, int]:
    """(array, orientation tag) through tifffile, which never applies the Orientation tag itself."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            tag = tif.pages.first.tags.get("Orientation")
            axes, array = series.axes, series.asarray()
    except ValueError as e:
        if "imagecodecs" in str(e):  # LZW, JPEG, ... without the optional codec package: Pillow has them
            return _read_with_pillow(path, header, tiff_codec_error=str(e))
        raise ValueError(f"cannot read {path} as a TIFF image: {e}") from None
    except (OSError, IndexError, tifffile.TiffFileError) as e:
        raise ValueError(f"cannot read {path} as a TIFF image: {e}") from None
    return _tiff_to_hwc(array, axes, path), 1 if tag is None else int(tag.value)


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
        array = np.empty((height, width * info["planes"]), np.uint16)  # the header was checked: it fits
        for i, row in enumerate(rows):
            array[i] = row
    except (png.Error, ValueError, IndexError) as e:
        raise ValueError(f"cannot read {path} as a PNG image: {e}") from None
    return array.reshape(height, width, info["planes"])


def _png_orientation(path: Path, header: ImageHeader) -> int:
    """A 16-bit PNG's eXIf orientation, read by Pillow (pypng does not parse eXIf)."""
    try:
        with _pillow_pixel_limit(header.pixels), Image.open(path) as im:
            return _exif_orientation(im)
    except Exception:  # the pixels were read by pypng; an unreadable eXIf chunk means no orientation
        return 1


def _exif_orientation(im: Image.Image) -> int:
    """The Orientation tag of a Pillow image. Called after loading: recent Pillow (13 here) applies a TIFF's
    orientation itself while loading and then drops the tag, so it is never applied twice."""
    try:
        return int(im.getexif().get(ORIENTATION_TAG, 1))
    except Exception:  # a malformed EXIF block: Pillow's exif_transpose ignores it too
        return 1


def _pillow_tiff_is_exact(im: Image.Image) -> bool:
    """Whether Pillow decodes this TIFF without narrowing: it reads 16-bit colour as 8-bit RGB and unsigned
    32-bit as signed 'I'."""
    tags = getattr(im, "tag_v2", {})
    bits = tags.get(258, (8,))
    bits = bits if isinstance(bits, tuple) else (bits,)
    unsigned32 = max(bits) == 32 and tags.get(339, (1,)) in (1, (1,)) and im.mode == "I"
    return not ((max(bits) > 8 and im.mode not in _PILLOW_16BIT and im.mode not in ("I", "F")) or unsigned32)


def _read_with_pillow(path: Path, header: ImageHeader, tiff_codec_error: str = "") -> tuple[np.ndarray, int]:
    """(array, orientation tag). The header was checked, so Pillow's bomb limit is this image's size."""
    try:
        with _pillow_pixel_limit(header.pixels), Image.open(path) as im:
            # An MPO (a phone JPEG with a preview or depth image appended) shows its first image.
            if getattr(im, "n_frames", 1) > 1 and im.format != "MPO":
                raise ValueError(f"{path} holds {im.n_frames} frames (a stack); expected a single 2-D image")
            return _pillow_array(im, path, tiff_codec_error), _exif_orientation(im)
    except (OSError, SyntaxError, Image.DecompressionBombError) as e:  # "cannot identify", truncated files
        raise ValueError(f"cannot read {path} as an image: {e}") from None


def _pillow_array(im: Image.Image, path: Path, tiff_codec_error: str) -> np.ndarray:
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


def _check_hwc_shape(shape: tuple[int, ...], path: Path) -> None:
    if len(shape) not in (2, 3) or (len(shape) == 3 and not 1 <= shape[2] <= 4):
        raise ValueError(f"{path}: expected an H x W or H x W x C image with C in 1..4 channels, got shape "
                         f"{tuple(shape)}")  # fmt: skip
    if shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"{path}: the image is empty (shape {tuple(shape)})")


def _as_hwc(array: np.ndarray, path: Path) -> np.ndarray:
    _check_hwc_shape(array.shape, path)
    return array[:, :, None] if array.ndim == 2 else array


def as_model_image(image: np.ndarray, name: str | Path = "image") -> np.ndarray:
    """An in-memory image as `read_image` returns one: [H, W, C] (C in 1..4; an [H, W] array is one channel)
    in the unit range (integers divided by their dtype's maximum, bool 0 / 1, floats as given). float32
    [H, W, C] passes through without a copy. ValueError naming the problem for any other shape or dtype, or
    non-finite floats."""
    array = _as_hwc(np.asarray(image), Path(str(name)))
    if array.dtype == np.float32:
        step = max(1, CHUNK_PIXELS // (array.shape[1] * array.shape[2]))  # row bands: no full-size temporary
        for top in range(0, array.shape[0], step):
            if not np.isfinite(array[top : top + step]).all():
                raise ValueError(f"{name}: the image contains NaN or infinite values")
        return array
    return to_unit_range(array, name)


def to_unit_range(array: np.ndarray, name: str | Path = "image") -> np.ndarray:
    """Integers -> divided by the dtype's maximum; bool -> 0/1; floats unchanged (must be finite)."""
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.integer):
        top = np.iinfo(array.dtype).max
        if array.dtype.itemsize <= 2:
            # Exact in float32 (both operands are), and a correctly rounded float32 division equals the
            # float64 one rounded to float32 (53 >= 2 * 24 + 2 bits: double rounding is innocuous for /),
            # at a third of the memory.
            out = array.astype(np.float32)
            out /= np.float32(top)
            return out
        return (array.astype(np.float64) / top).astype(np.float32)
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
    """(x - mean) / std per channel, [H, W, C] -> [C, H, W] float32 (what the model takes). Written channel
    by channel into the result: no full-size temporaries."""
    m, sd = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    out = np.empty((image.shape[2], *image.shape[:2]), np.float32)
    for c in range(image.shape[2]):
        np.subtract(image[:, :, c], m[c], out=out[c])
        out[c] /= sd[c]
    return out


def display_rgb(image: np.ndarray) -> np.ndarray:
    """[H, W, C] unit-range image -> uint8 RGB for viewing: alpha dropped, gray repeated, and the range
    stretched to the 0.5/99.5 percentiles (a dim 12-bit microscope image should not render black)."""
    c = image.shape[2]
    rgb = image[:, :, : c - 1] if c in (2, 4) else image
    # percentiles of gray repeated three times are those of the broadcast view (the same values)
    lo, hi = np.percentile(np.broadcast_to(rgb, (*rgb.shape[:2], 3)), [0.5, 99.5])
    out = np.empty((*rgb.shape[:2], 3), np.uint8)
    step = max(1, CHUNK_PIXELS // rgb.shape[1])  # rows per chunk: bounded temporaries for huge images
    for top in range(0, rgb.shape[0], step):
        rows = rgb[top : top + step]
        scaled = (rows - lo) / (hi - lo) if hi > lo else np.zeros_like(rows)
        out[top : top + step] = (np.clip(scaled, 0, 1) * 255 + 0.5).astype(np.uint8)  # broadcasts gray
    return out


def write_mask(mask: np.ndarray, palette: Sequence[Sequence[int]], path: str | Path) -> None:
    """A palette PNG whose pixel values are the class indices (uint8) and whose colours are `palette`."""
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(f"write_mask expects a uint8 [H, W] class map, got {mask.dtype} {tuple(mask.shape)}")
    im = Image.frombytes("P", (mask.shape[1], mask.shape[0]), np.ascontiguousarray(mask).tobytes())
    flat = [int(v) for colour in palette for v in colour]
    im.putpalette(flat + [0] * (768 - len(flat)))
    # zlib's default level, not Pillow's optimize=True: that tries every filter at level 9, 30x the time for 5%
    # smaller files on a noisy 512 x 512 mask (663 ms against 21 ms; 7.4 against 1.8 ms on a smooth one), and
    # `serve` encodes a mask per request
    im.save(path, compress_level=6)


def overlay(image: np.ndarray, mask: np.ndarray, palette: Sequence[Sequence[int]],
            alpha: float = 0.5) -> np.ndarray:  # fmt: skip
    """uint8 RGB [H, W, 3]: the image (display_rgb) with each nonzero mask value tinted its colour
    (`palette[value]`: `masks.mask_palette` colours every value a mask can hold)."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    out = display_rgb(image)
    table = np.asarray(palette, np.float32)
    step = max(1, CHUNK_PIXELS // mask.shape[1])
    for top in range(0, mask.shape[0], step):
        rows = mask[top : top + step]
        base = out[top : top + step].astype(np.float32)
        tint = (rows > 0)[:, :, None] * alpha
        out[top : top + step] = (base * (1 - tint) + table[rows] * tint + 0.5).astype(np.uint8)
    return out


def write_rgb(rgb: np.ndarray, path: str | Path) -> None:
    Image.fromarray(rgb).save(path, compress_level=6)  # as write_mask
