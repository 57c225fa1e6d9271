"""Request bodies in, response bodies out, for the server: decoding goes through the same
`image_io.read_image` as `unet-fast segment` (via a temporary file named by the sniffed format), so a
served image is read exactly as the batch path reads it; masks are written by `image_io.write_mask`."""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from unet_fast.inference.batch import check_pixels
from unet_fast.inference.image_io import IMAGE_SUFFIXES
from unet_fast.inference.memory import ImageHeader

# Magic numbers of the formats read_image takes (PNG, TIFF both byte orders, NumPy .npy, JPEG, BMP, WebP).
MAGIC = ((b"\x89PNG\r\n\x1a\n", ".png"), (b"II*\x00", ".tif"), (b"MM\x00*", ".tif"), (b"\x93NUMPY", ".npy"),
         (b"\xff\xd8\xff", ".jpg"), (b"BM", ".bmp"))  # fmt: skip


def sniff_suffix(body: bytes) -> str:
    """The file suffix for `body` from its magic number; ValueError when it is none of the known ones."""
    for magic, suffix in MAGIC:
        if body.startswith(magic):
            return suffix
    if body[:4] == b"RIFF" and body[8:12] == b"WEBP" and ".webp" in IMAGE_SUFFIXES:
        return ".webp"
    raise ValueError("the body is not a PNG, TIFF, JPEG, BMP, WebP or NumPy .npy image (unknown magic number "
                     f"{body[:8]!r})")  # fmt: skip


def decode(body: bytes, in_channels: int, max_pixels: int | None,
           fits: Callable[[ImageHeader], None] | None = None) -> np.ndarray:  # fmt: skip
    """Body -> float32 [H, W, C] as `read_image` gives it (EXIF orientation applied), checked against the
    model's channel count. From the header, before decoding: ImageTooLargeError (a ValueError) over
    `max_pixels` or when `fits(header)` refuses it (`Segmenter.check_fits`: the memory). ValueError for
    anything else wrong."""
    from unet_fast.inference.image_io import check_decode, match_channels, read_image

    def check(header: ImageHeader) -> None:
        check_pixels(header, max_pixels)
        (fits or check_decode)(header)

    if not body:
        raise ValueError("empty request body: send the image file's bytes")
    suffix = sniff_suffix(body)
    with tempfile.TemporaryDirectory(prefix="unet-fast-serve-") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(body)
        try:
            image = read_image(path, check=check)
            match_channels(image, in_channels, "upload")  # the batch must not fail on one request
        except ValueError as e:  # name the upload, not our temporary file
            raise type(e)(str(e).replace(str(path), "upload")) from None
    return image


def mask_png(mask: np.ndarray, palette) -> bytes:
    """The class-map PNG `unet-fast segment` writes (palette PNG, pixel value = class index)."""
    from unet_fast.inference.image_io import write_mask

    buf = io.BytesIO()
    buf.name = "mask.png"  # Pillow picks the format from the name
    write_mask(mask, palette, buf)
    return buf.getvalue()
