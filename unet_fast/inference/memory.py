"""How much memory segmenting one image takes, and how much this process can still have.

The readers refuse an image from its header (before a pixel is decoded) when the memory it needs is not
there, instead of Pillow's fixed decompression-bomb limit (89 Mpx, an error at 179 Mpx, whatever the machine)
or an out-of-memory kill. The need is modelled from what the code allocates (see `segmentation_bytes`);
it is an estimate, checked against measured peaks in tests/inference/test_large_images.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

GIB = 1 << 30
# Per-pixel work that is not kept (the argmax, the display stretch, the overlay tint) goes by chunks of rows
# of about this many pixels, so its temporaries stay small whatever the image's size or shape.
CHUNK_PIXELS = 1 << 20
_CHUNK_BYTES = 100 * CHUNK_PIXELS  # the overlay's temporaries per chunk: ~80 bytes per pixel, measured
_UNLIMITED = 1 << 60  # cgroup files say "max" or a huge number when no limit is set
_WHOLE_SLIDE_HINT = ("tile it first: a tiled (pyramidal) TIFF / BigTIFF / OME-TIFF, a .npy or a zarr array is "
                     "streamed tile by tile in bounded memory (`unet-fast segment --wsi`, docs/wsi.md)")


class ImageTooLargeError(ValueError):
    """The image needs more memory than is available (or more pixels than a set limit). HTTP 413 in
    `unet-fast serve`; a failed input in `unet-fast segment`."""


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header says about the array `read_image` will decode from it (before any decoding).

    height, width: as stored (an EXIF rotation swaps them later; the memory is the same). channels: samples
    per pixel as decoded (a palette image decodes to 3 or 4). itemsize: bytes per decoded sample."""

    path: Path
    height: int
    width: int
    channels: int
    itemsize: int

    @property
    def pixels(self) -> int:
        return self.height * self.width

    def describe(self) -> str:
        return f"{self.width}x{self.height} ({self.pixels / 1e6:,.1f} Mpx, {self.channels} channel(s))"


def available_bytes() -> int | None:
    """Memory this process can still take: the kernel's MemAvailable, lowered to what the cgroup (container)
    limit leaves; None where neither can be read (then no memory check is made)."""
    avail = _meminfo_available()
    room = _cgroup_room()
    if room is not None:
        avail = room if avail is None else min(avail, room)
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):  # not on this OS
            return None
    return max(0, avail)


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return _UNLIMITED
    try:
        return int(text)
    except ValueError:
        return None


def _cgroup_room() -> int | None:
    """limit - usage of this process's memory cgroup (v2, else v1), or None without a limit."""
    root = Path("/sys/fs/cgroup")
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        if controllers == "":  # v2: 0::/path
            pairs = [(root / rel.lstrip("/"), "memory.max", "memory.current"), (root, "memory.max", "memory.current")]
        elif "memory" in controllers.split(","):  # v1: N:memory:/path
            pairs = [(root / "memory" / rel.lstrip("/"), "memory.limit_in_bytes", "memory.usage_in_bytes"),
                     (root / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes")]  # fmt: skip
        else:
            continue
        for folder, limit_file, usage_file in pairs:
            limit, usage = _read_int(folder / limit_file), _read_int(folder / usage_file)
            if limit is not None and usage is not None and limit < _UNLIMITED:
                return limit - usage
    return None


def format_bytes(n: int) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB / 10 else f"{n / (1 << 20):.0f} MiB"


def decode_bytes(header: ImageHeader) -> int:
    """Peak of `read_image` alone: the decoder's own buffer (Pillow keeps 1, 2 or 4 bytes per pixel), up to
    two copies of the samples on their way out of it (raw bytes, byte order or orientation), and the float32
    unit-range array."""
    raw = header.channels * header.itemsize
    return header.pixels * (max(4, raw) + 2 * raw + 4 * header.channels)


def segmentation_bytes(header: ImageHeader, in_channels: int, num_classes: int, overlay: bool,
                       engine: int = 0) -> int:  # fmt: skip
    """Peak memory of reading, segmenting and writing one image, in bytes: the largest of the phases, plus
    `engine` (the activations of one batch of patches, `engine_bytes`; the weights are already resident).
    Every phase after decoding holds the float32 image [H, W, C], which the overlay needs at the end.

    - decode: `decode_bytes`.
    - prepare: the channel-matched image and the normalised input [C_in, H, W] fp32.
    - window: the normalised input, the blended sum [K, H, W] and the weight sum [H, W] fp32, the mask
      [H, W] uint8 (decided by chunks of `CHUNK_PIXELS`: an int64 index map per chunk).
    - write: the mask and its PNG (two uint8 copies in Pillow); with an overlay the percentile copy of the
      display image (3 fp32 per pixel), the uint8 RGB result and one chunk's temporaries of the tint."""
    px = header.pixels
    image = px * header.channels * 4
    prepare = image + px * 8 * in_channels
    window = image + px * (4 * in_channels + 4 * num_classes + 4 + 1)
    write = image + px * (1 + 2) + (px * (12 + 3) + _CHUNK_BYTES if overlay else 0)
    return max(decode_bytes(header), prepare, window + _CHUNK_BYTES // 4, write) + engine


def engine_bytes(base_channels: int, depth: int, patch: int, batch_size: int) -> int:
    """An estimate of the activations one batch of patches takes in a U-Net: per level, about 8 feature
    maps of the level's width (the two convs, the skip kept for the decoder, the concat, the decoder's
    convs), fp32."""
    levels = sum(base_channels * 2**i * (patch / 2**i) ** 2 for i in range(depth + 1))
    return int(batch_size * 8 * 4 * levels)


def check_fits(header: ImageHeader, need: int, what: str, limit: int | None = None) -> None:
    """ImageTooLargeError when `need` bytes exceed `limit` (default: what is available now), naming the
    image, both figures and the way out."""
    have = available_bytes() if limit is None else limit
    if have is None or need <= have:
        return
    raise ImageTooLargeError(f"{header.path.name}: {header.describe()} needs {format_bytes(need)} to {what}, "
                             f"{format_bytes(have)} available; {_WHOLE_SLIDE_HINT}")  # fmt: skip
