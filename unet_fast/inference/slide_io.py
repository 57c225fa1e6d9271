"""Whole-slide input and output, one region at a time: readers that decode only the tiles a region needs,
a tile store for results in progress, and a tiled, compressed, pyramidal BigTIFF writer.

Readers (`open_slide`) return raw samples [h, w, C] in the file's dtype for any region of any pyramid level:

- **TIFF / BigTIFF / OME-TIFF / SVS** (tiled or in strips, contiguous or planar samples): tifffile parses the
  file; `TiffSlide.read` reads and decodes exactly the tiles (strips) that intersect the region, through
  tifffile's own per-segment decoder (deflate, zstd, LZMA, packbits built in; JPEG / LZW / JPEG 2000 need the
  optional `imagecodecs`, `pip install "unet_fast[wsi]"`). A tile that is truncated or does not decode is a
  `SlideReadError` naming the level, tile row / column, its byte offset and length.
- **.npy**: the header is parsed and rows are read with positioned reads (no memory map: mapped pages would
  count in the process's RSS for the whole slide).
- **zarr** arrays / groups (`.zarr` folders; optional `zarr`), OpenSlide formats (`.svs`, `.ndpi`, `.mrxs`,
  ...; optional `openslide-python`, used for the formats tifffile does not read).
- PNG / JPEG / BMP: decoded whole when the decoded image fits `max_decoded_bytes`; larger ones are refused
  with their size and the formats that stream.

Output: `TileStore` is a raw file of fixed-size tiles in tile-major order, written with positioned writes as
results complete (any order, any process; all-zero tiles are not written, so a mostly-background class map
stays a sparse file); `write_pyramid` turns a finished store into a BigTIFF with `tile x tile` deflate tiles
and 2x-subsampled pyramid levels in SubIFDs (OME-TIFF, as QuPath / Bio-Formats and OpenSlide-based viewers
read pyramids), streamed tile by tile, so memory stays a few tiles whatever the slide size.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

__all__ = [
    "OPENSLIDE_SUFFIXES",
    "SLIDE_SUFFIXES",
    "ArraySlide",
    "NpySlide",
    "Slide",
    "SlideReadError",
    "TiffSlide",
    "TileStore",
    "open_slide",
    "write_pyramid",
]

TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".svs", ".ome.tif", ".ome.tiff")
# Formats only OpenSlide reads (those that are TIFF inside, .svs, are read by tifffile first).
OPENSLIDE_SUFFIXES = (".ndpi", ".mrxs", ".vms", ".vmu", ".scn", ".bif", ".svslide")
DECODED_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
SLIDE_SUFFIXES = (*TIFF_SUFFIXES, ".npy", ".zarr", *OPENSLIDE_SUFFIXES, *DECODED_SUFFIXES)
DEFAULT_MAX_DECODED_BYTES = 1 << 30  # a PNG / JPEG decoded whole: up to 1 GiB of samples
STREAMING_FORMATS = "a tiled (pyramidal) TIFF / BigTIFF / OME-TIFF, a .npy array or a zarr array"


class SlideReadError(ValueError):
    """A slide or one of its tiles cannot be read; the message names the file and, for a tile, which one."""


class Slide(Protocol):
    """A large image read region by region. `shape` = (H, W, C) at level 0; `levels` = (H, W) per pyramid level,
    level 0 first."""

    path: str
    shape: tuple[int, int, int]
    dtype: np.dtype
    levels: list[tuple[int, int]]
    kind: str  # a short description of the format, for logs and metadata

    def read(self, y: int, x: int, h: int, w: int, level: int = 0) -> np.ndarray: ...

    def close(self) -> None: ...


def _check_region(slide: Slide, y: int, x: int, h: int, w: int, level: int) -> tuple[int, int]:
    if not 0 <= level < len(slide.levels):
        raise ValueError(f"{slide.path}: level {level} does not exist (the slide has {len(slide.levels)})")
    lh, lw = slide.levels[level]
    if h < 1 or w < 1 or y < 0 or x < 0 or y + h > lh or x + w > lw:
        raise ValueError(f"{slide.path}: region y={y} x={x} h={h} w={w} is outside level {level} ({lh}x{lw})")
    return lh, lw


# -- in-memory arrays ------------------------------------------------------------------------------------
class ArraySlide:
    """An array already in memory (or any object sliced like one: a zarr array), [H, W] or [H, W, C]."""

    def __init__(self, array: Any, path: str = "array", kind: str = "array",
                 levels: Sequence[Any] | None = None) -> None:  # fmt: skip
        arrays = [array, *(levels or [])]
        for a in arrays:
            if len(a.shape) not in (2, 3) or (len(a.shape) == 3 and not 1 <= a.shape[2] <= 4):
                raise SlideReadError(f"{path}: expected an H x W or H x W x C array with C in 1..4, got shape "
                                     f"{tuple(a.shape)}")  # fmt: skip
        self._arrays = arrays
        self.path, self.kind = str(path), kind
        c = array.shape[2] if len(array.shape) == 3 else 1
        self.shape = (int(array.shape[0]), int(array.shape[1]), int(c))
        self.dtype = np.dtype(array.dtype)
        self.levels = [(int(a.shape[0]), int(a.shape[1])) for a in arrays]

    def read(self, y: int, x: int, h: int, w: int, level: int = 0) -> np.ndarray:
        _check_region(self, y, x, h, w, level)
        out = np.asarray(self._arrays[level][y : y + h, x : x + w])
        return out[:, :, None] if out.ndim == 2 else out

    def close(self) -> None:
        pass


class NpySlide:
    """A `.npy` file read row range by row range with positioned reads (C order), so only the rows of a
    region are touched and nothing stays mapped."""

    def __init__(self, path: str | Path) -> None:
        self.path, self.kind = str(path), "npy"
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)  # fmt: skip
                shape, fortran, dtype = read_header(f)
                self._offset = f.tell()
        except Exception as e:
            raise SlideReadError(f"cannot read {path} as a NumPy array: {e}") from None
        if dtype.hasobject:
            raise SlideReadError(f"{path}: object arrays are not images (and are never unpickled)")
        if len(shape) not in (2, 3) or (len(shape) == 3 and not 1 <= shape[2] <= 4) or 0 in shape:
            raise SlideReadError(
                f"{path}: expected an H x W or H x W x C array with C in 1..4, got shape {shape}"
            )
        self.dtype = np.dtype(dtype)
        self.shape = (int(shape[0]), int(shape[1]), int(shape[2]) if len(shape) == 3 else 1)
        self.levels = [self.shape[:2]]
        self._fortran = bool(fortran)
        need = self._offset + math.prod(shape) * self.dtype.itemsize
        if os.path.getsize(path) < need:
            raise SlideReadError(f"{path}: the file is truncated ({os.path.getsize(path)} bytes, the header says "
                                 f"{need})")  # fmt: skip
        self._fd = os.open(path, os.O_RDONLY)

    def read(self, y: int, x: int, h: int, w: int, level: int = 0) -> np.ndarray:
        _check_region(self, y, x, h, w, level)
        _, W, C = self.shape
        item = self.dtype.itemsize
        if self._fortran:  # rare for images: a column-major array is read through a memory map
            arr = np.load(self.path, mmap_mode="r", allow_pickle=False)
            out = np.array(arr[y : y + h, x : x + w])
            return out[:, :, None] if out.ndim == 2 else out
        row = W * C * item
        if w == W:  # whole rows: one read
            buf = os.pread(self._fd, h * row, self._offset + y * row)
            return np.frombuffer(buf, self.dtype).reshape(h, W, C).copy()
        out = np.empty((h, w, C), self.dtype)
        span = w * C * item
        for i in range(h):
            buf = os.pread(self._fd, span, self._offset + (y + i) * row + x * C * item)
            out[i] = np.frombuffer(buf, self.dtype).reshape(w, C)
        return out

    def close(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None


# -- TIFF ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Level:
    page: Any  # tifffile.TiffPage
    height: int
    width: int
    samples: int
    planar: bool  # samples stored in separate planes (PlanarConfiguration 2)
    tile_h: int
    tile_w: int
    tiled: bool

    @property
    def per_plane(self) -> int:
        return math.ceil(self.height / self.tile_h) * math.ceil(self.width / self.tile_w)


class TiffSlide:
    """A TIFF / BigTIFF / OME-TIFF / SVS read tile by tile: only the tiles (or strips) a region intersects are
    read and decoded, each through tifffile's decoder for its page. Pyramid levels: the first series' levels
    (OME SubIFDs, SVS reduced pages)."""

    def __init__(self, path: str | Path) -> None:
        import tifffile

        self.path = str(path)
        try:
            self._tif = tifffile.TiffFile(path)
            series = self._tif.series[0]
            pages = [lvl.pages[0] for lvl in series.levels]
        except Exception as e:
            raise SlideReadError(f"cannot read {path} as a TIFF: {type(e).__name__}: {e}") from None
        self._levels: list[_Level] = []
        for i, (lvl, page) in enumerate(zip(series.levels, pages, strict=True)):
            if page is None or not hasattr(page, "decode"):
                page = page.aspage() if page is not None else None
            if page is None:
                raise SlideReadError(f"{path}: level {i} has no page")
            if len(lvl.pages) > 1:
                self._tif.close()
                raise SlideReadError(f"{path}: level {i} holds {len(lvl.pages)} pages (channels or planes stored "
                                     "as separate pages); streaming reads one page per level")  # fmt: skip
            self._levels.append(self._describe(page, i))
        base = self._levels[0]
        self.shape = (base.height, base.width, base.samples)
        self.dtype = np.dtype(base.page.dtype)
        self.levels = [(lv.height, lv.width) for lv in self._levels]
        comp = getattr(base.page.compression, "name", str(base.page.compression))
        layout = f"tiles {base.tile_h}x{base.tile_w}" if base.tiled else f"strips of {base.tile_h} rows"
        big = "BigTIFF" if self._tif.is_bigtiff else "TIFF"
        self.kind = (
            f"{'OME-' if self._tif.is_ome else ''}{big}, {layout}, {comp}, {len(self.levels)} level(s)"
        )
        self._lock = threading.Lock()

    def _describe(self, page: Any, i: int) -> _Level:
        shaped = page.shaped  # (separate samples, depth, length, width, contig samples)
        if shaped[1] != 1:
            raise SlideReadError(
                f"{self.path}: level {i} is a volume (depth {shaped[1]}); expected a 2-D image"
            )
        if int(page.photometric) == 3:  # palette: indices into a colour map, not intensities
            raise SlideReadError(f"{self.path}: palette (indexed colour) TIFFs are not read as slides")
        if page.dtype is None:
            raise SlideReadError(f"{self.path}: level {i} has an unsupported sample format "
                                 f"({page.bitspersample}-bit)")  # fmt: skip
        planar = shaped[0] > 1
        samples = shaped[0] if planar else shaped[4]
        if not 1 <= samples <= 4:
            raise SlideReadError(f"{self.path}: level {i} has {samples} samples per pixel; expected 1 to 4")
        if page.is_tiled:
            th, tw = int(page.tilelength), int(page.tilewidth)
        else:
            th, tw = min(int(page.rowsperstrip or shaped[2]), int(shaped[2])), int(shaped[3])
        return _Level(page, int(shaped[2]), int(shaped[3]), int(samples), planar, th, tw, bool(page.is_tiled))

    def read(self, y: int, x: int, h: int, w: int, level: int = 0) -> np.ndarray:
        _check_region(self, y, x, h, w, level)
        lv = self._levels[level]
        out = np.zeros((h, w, lv.samples), self.dtype)
        ntx = math.ceil(lv.width / lv.tile_w)
        for ty in range(y // lv.tile_h, (y + h - 1) // lv.tile_h + 1):
            for tx in range(x // lv.tile_w, (x + w - 1) // lv.tile_w + 1):
                for plane in range(lv.samples if lv.planar else 1):
                    index = plane * lv.per_plane + ty * ntx + tx
                    seg = self._segment(lv, level, index, ty, tx, plane)
                    if seg is None:
                        continue  # a tile the writer left out: reads as zeros, as in tifffile
                    y0, x0 = ty * lv.tile_h, tx * lv.tile_w
                    sy0, sy1 = max(y, y0), min(y + h, y0 + seg.shape[1])
                    sx0, sx1 = max(x, x0), min(x + w, x0 + seg.shape[2])
                    if sy0 >= sy1 or sx0 >= sx1:
                        continue
                    block = seg[0, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0]
                    if lv.planar:
                        out[sy0 - y : sy1 - y, sx0 - x : sx1 - x, plane] = block[..., 0]
                    else:
                        out[sy0 - y : sy1 - y, sx0 - x : sx1 - x] = block
        return out

    def _segment(self, lv: _Level, level: int, index: int, ty: int, tx: int, plane: int) -> np.ndarray | None:
        page = lv.page
        what = (f"{self.path}: level {level} {'tile' if lv.tiled else 'strip'} {index} (row {ty}"
                + (f", column {tx}" if lv.tiled else "") + (f", sample plane {plane}" if lv.planar else "") + ")")  # fmt: skip
        try:
            offset, count = int(page.dataoffsets[index]), int(page.databytecounts[index])
        except IndexError:
            raise SlideReadError(f"{what}: the file lists only {len(page.dataoffsets)} tiles") from None
        if offset == 0 or count == 0:
            return None
        fh = self._tif.filehandle
        with self._lock:
            fh.seek(offset)
            data = fh.read(count)
        if len(data) < count:
            raise SlideReadError(f"{what} at byte offset {offset}: the file is truncated ({len(data)} of {count} "
                                 "bytes)")  # fmt: skip
        try:
            seg, _, _ = page.decode(data, index, jpegtables=getattr(page, "jpegtables", None))
        except Exception as e:
            hint = ' (pip install imagecodecs, or "unet_fast[wsi]")' if "imagecodecs" in str(e) else ""
            raise SlideReadError(f"{what} at byte offset {offset}, {count} bytes: cannot decode: "
                                 f"{type(e).__name__}: {e}{hint}") from None  # fmt: skip
        if seg is None:
            return None
        seg = np.asarray(seg)
        return seg.reshape(seg.shape[0], seg.shape[1], seg.shape[2], -1) if seg.ndim == 4 else seg[None]

    def resolution_um(self) -> tuple[float, float] | None:
        """Pixel size (y, x) in micrometres from the first page's resolution tags, when it says one."""
        page = self._levels[0].page
        try:
            xres, yres = page.resolution
            unit = int(page.resolutionunit)
        except Exception:
            return None
        per = {2: 25400.0, 3: 10000.0}.get(unit)  # inch, centimetre -> micrometres
        if per is None or not xres or not yres:
            return None
        return per / yres, per / xres

    def close(self) -> None:
        self._tif.close()


# -- OpenSlide and zarr (optional) -----------------------------------------------------------------------
class OpenSlideSlide:
    """A slide in a format OpenSlide reads (needs `openslide-python` and the OpenSlide library)."""

    def __init__(self, path: str | Path) -> None:
        try:
            import openslide
        except ImportError:
            raise SlideReadError(f"{path}: this format needs OpenSlide (pip install openslide-python "
                                 "openslide-bin); or convert it to a tiled TIFF") from None  # fmt: skip
        try:
            self._s = openslide.OpenSlide(str(path))
        except Exception as e:
            raise SlideReadError(f"cannot open {path} with OpenSlide: {e}") from None
        self.path, self.kind = str(path), f"OpenSlide ({self._s.properties.get('openslide.vendor', '?')})"
        w, h = self._s.dimensions
        self.shape, self.dtype = (int(h), int(w), 3), np.dtype(np.uint8)
        self.levels = [(int(lh), int(lw)) for lw, lh in self._s.level_dimensions]
        self._down = [float(d) for d in self._s.level_downsamples]

    def read(self, y: int, x: int, h: int, w: int, level: int = 0) -> np.ndarray:
        _check_region(self, y, x, h, w, level)
        d = self._down[level]  # OpenSlide takes the location in level-0 coordinates
        rgba = np.asarray(self._s.read_region((round(x * d), round(y * d)), level, (w, h)))
        return np.ascontiguousarray(rgba[:, :, :3])

    def close(self) -> None:
        self._s.close()


def _open_zarr(path: Path) -> ArraySlide:
    try:
        import zarr
    except ImportError:
        raise SlideReadError(f"{path}: reading zarr needs the optional 'zarr' package (pip install zarr, or "
                             '"unet_fast[wsi]")') from None  # fmt: skip
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as e:
        raise SlideReadError(f"cannot open {path} as zarr: {e}") from None
    if hasattr(node, "shape"):
        return ArraySlide(node, str(path), "zarr array")
    names = sorted((k for k in node.array_keys() if k.isdigit()), key=int)  # OME-Zarr style "0", "1", ...
    if not names:
        raise SlideReadError(f"{path}: a zarr group without arrays named 0, 1, ... (pyramid levels)")
    arrays = [node[k] for k in names]
    return ArraySlide(arrays[0], str(path), f"zarr group, {len(arrays)} level(s)", arrays[1:])


# -- opening ---------------------------------------------------------------------------------------------
def _suffix(path: Path) -> str:
    name = path.name.lower()
    for long in (".ome.tiff", ".ome.tif"):
        if name.endswith(long):
            return long
    return path.suffix.lower()


def decoded_size(path: Path) -> tuple[int, int, int, int] | None:
    """(H, W, channels, bytes per sample) of a PNG / JPEG / BMP from its header, or None if unreadable."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Image.MAX_IMAGE_PIXELS, saved = None, Image.MAX_IMAGE_PIXELS
            try:
                with Image.open(path) as im:
                    bands = len(im.getbands())
                    depth = 2 if im.mode.startswith("I;16") or im.mode in ("I", "F") else 1
                    return im.size[1], im.size[0], bands, depth
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except Exception:
        return None


def open_slide(path: str | Path, max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES) -> Slide:
    """Open `path` for region reads. Raises FileNotFoundError, SlideReadError (a ValueError) for unreadable or
    unsupported files, and for a PNG / JPEG / BMP whose decoded size is over `max_decoded_bytes` (the message
    gives its size and the formats that stream)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"slide {path} not found")
    suffix = _suffix(path)
    if suffix == ".zarr" or (
        path.is_dir() and ((path / ".zarray").exists() or (path / "zarr.json").exists())
    ):
        return _open_zarr(path)
    if suffix == ".npy":
        return NpySlide(path)
    if suffix in OPENSLIDE_SUFFIXES:
        return OpenSlideSlide(path)
    if suffix in TIFF_SUFFIXES:
        try:
            return TiffSlide(path)
        except SlideReadError:
            if suffix == ".svs":  # an SVS tifffile cannot parse: OpenSlide may
                try:
                    return OpenSlideSlide(path)
                except SlideReadError:
                    pass
            raise
    if suffix in DECODED_SUFFIXES:
        size = decoded_size(path)
        if size is not None:
            h, w, c, depth = size
            n = h * w * c * depth
            if n > max_decoded_bytes:
                raise SlideReadError(
                    f"{path} is {w} x {h} pixels ({h * w / 1e6:.0f} Mpx, {c} channel(s), {n / (1 << 30):.1f} GiB "
                    f"decoded): {suffix.lstrip('.').upper()} cannot be read in parts and is larger than the "
                    f"{max_decoded_bytes / (1 << 30):.1f} GiB limit for decoding whole. Convert it to "
                    f"{STREAMING_FORMATS}, which are read tile by tile, e.g. `vips tiffsave {path.name} out.tif "
                    "--tile --pyramid --bigtiff --compression deflate`"
                )
        from unet_fast.inference.image_io import read_image

        return ArraySlide(read_image(path), str(path), suffix.lstrip(".").upper() + " (decoded whole)")
    raise SlideReadError(f"{path}: unsupported slide type {suffix!r}; expected one of {SLIDE_SUFFIXES}")


# -- results in progress: a tile store -------------------------------------------------------------------
class TileStore:
    """A raw file of `tile x tile x channels` blocks (tile-major, row-major over the tile grid) for an image of
    `shape` (H, W): blocks are written with positioned writes as results complete, in any order and from any
    process; unwritten blocks (and all-zero ones, which are not written) read as zeros."""

    def __init__(self, path: str | Path, shape: tuple[int, int], channels: int, dtype: Any, tile: int,
                 create: bool = True) -> None:  # fmt: skip
        if tile < 1 or channels < 1 or min(shape) < 1:
            raise ValueError(f"bad tile store geometry: shape {shape}, {channels} channels, tile {tile}")
        self.path, self.shape, self.channels = Path(path), (int(shape[0]), int(shape[1])), int(channels)
        self.dtype, self.tile = np.dtype(dtype), int(tile)
        self.grid = (math.ceil(shape[0] / tile), math.ceil(shape[1] / tile))
        self.block_bytes = tile * tile * channels * self.dtype.itemsize
        size = self.grid[0] * self.grid[1] * self.block_bytes
        if create:
            with open(self.path, "wb") as f:
                f.truncate(size)  # sparse: no disk is used until blocks are written
        elif not self.path.is_file() or self.path.stat().st_size != size:
            raise ValueError(f"tile store {self.path} is missing or not {size} bytes")
        self._fd = os.open(self.path, os.O_RDWR)

    def _offset(self, ty: int, tx: int) -> int:
        return (ty * self.grid[1] + tx) * self.block_bytes

    def write(self, y: int, x: int, data: np.ndarray) -> None:
        """Write `data` [h, w, C] (or [h, w]) at (y, x): both multiples of the tile; h and w whole tiles, or
        reaching the image's edge."""
        if data.ndim == 2:
            data = data[:, :, None]
        t = self.tile
        h, w = data.shape[:2]
        if y % t or x % t or (h % t and y + h != self.shape[0]) or (w % t and x + w != self.shape[1]):
            raise ValueError(f"tile store write at ({y}, {x}) of {h}x{w} is not tile-aligned (tile {t})")
        data = np.ascontiguousarray(data, self.dtype)
        for by in range(0, h, t):
            for bx in range(0, w, t):
                block = data[by : by + t, bx : bx + t]
                if not block.any():
                    continue  # an unwritten block reads as zeros
                if block.shape[:2] != (t, t):
                    full = np.zeros((t, t, self.channels), self.dtype)
                    full[: block.shape[0], : block.shape[1]] = block
                    block = full
                os.pwrite(
                    self._fd,
                    np.ascontiguousarray(block).tobytes(),
                    self._offset((y + by) // t, (x + bx) // t),
                )

    def read_block(self, ty: int, tx: int) -> np.ndarray:
        """The block at tile row `ty`, column `tx`: [tile, tile, C] (zeros past the image's edge)."""
        buf = os.pread(self._fd, self.block_bytes, self._offset(ty, tx))
        if len(buf) < self.block_bytes:
            raise OSError(f"tile store {self.path} is truncated at block ({ty}, {tx})")
        return np.frombuffer(buf, self.dtype).reshape(self.tile, self.tile, self.channels)

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def halved(self, path: str | Path) -> TileStore:
        """The next pyramid level: a store of ceil(H/2) x ceil(W/2), each pixel the top-left one of its 2x2
        (nearest: a class map keeps valid class values), built block by block from 2x2 blocks of this one."""
        shape = (math.ceil(self.shape[0] / 2), math.ceil(self.shape[1] / 2))
        out = TileStore(path, shape, self.channels, self.dtype, self.tile)
        t = self.tile
        for ty in range(out.grid[0]):
            for tx in range(out.grid[1]):
                mosaic = np.zeros((2 * t, 2 * t, self.channels), self.dtype)
                for dy in range(2):
                    for dx in range(2):
                        sy, sx = 2 * ty + dy, 2 * tx + dx
                        if sy < self.grid[0] and sx < self.grid[1]:
                            mosaic[dy * t : (dy + 1) * t, dx * t : (dx + 1) * t] = self.read_block(sy, sx)
                out.write(ty * t, tx * t, _crop_to(mosaic[::2, ::2], out.shape, ty * t, tx * t))
        return out


def _crop_to(block: np.ndarray, shape: tuple[int, int], y: int, x: int) -> np.ndarray:
    return block[: min(block.shape[0], shape[0] - y), : min(block.shape[1], shape[1] - x)]


def _tiles(store: TileStore, channel: int | None) -> Iterator[np.ndarray]:
    for ty in range(store.grid[0]):
        for tx in range(store.grid[1]):
            block = store.read_block(ty, tx)
            yield (
                block[:, :, channel]
                if channel is not None
                else (block[:, :, 0] if store.channels == 1 else block)
            )


def write_pyramid(path: str | Path, store: TileStore, *, min_size: int | None = None,
                  resolution_um: tuple[float, float] | None = None, name: str = "",
                  planar_channels: bool = False, uuid: str | None = None) -> list[tuple[int, int]]:  # fmt: skip
    """Write a finished `store` as a BigTIFF at `path`: OME-TIFF, `store.tile` square deflate tiles, pyramid
    levels (2x nearest subsampling) in SubIFDs until a level fits in one tile (or `min_size`). Written to
    `path` + ".tmp" and renamed when complete, so a file at `path` is always whole. Channels: one sample for a
    class map; several as separate planes ("CYX", e.g. per-class probabilities) with `planar_channels`.
    `resolution_um` (y, x): pixel size written to the OME metadata and the resolution tags. Returns the (H, W)
    of every level written. `uuid`: the OME UUID (default: a random one); a UUID derived from what decides
    the content makes reruns byte-identical. Temporary level stores are made beside `path` and removed."""
    import tifffile

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    floor = min_size or store.tile
    stores = [store]
    made: list[TileStore] = []
    try:
        while max(stores[-1].shape) > floor:
            made.append(stores[-1].halved(path.with_name(f".{path.name}.level{len(stores)}.bin")))
            stores.append(made[-1])
        axes = "CYX" if planar_channels else ("YX" if store.channels == 1 else "YXS")
        meta: dict[str, Any] = {"axes": axes}
        if name:
            meta["Name"] = name
        if uuid:
            meta["UUID"] = f"urn:uuid:{uuid}"
        # buffersize: tifffile gathers this many bytes of tiles per encoding pass (512 MiB by default), which
        # would make the writer's memory, not the tile batch, the peak on a large slide
        opts: dict[str, Any] = {"tile": (store.tile, store.tile), "compression": "zlib", "dtype": store.dtype,
                                "photometric": "minisblack", "buffersize": 16 << 20}  # fmt: skip
        if planar_channels:
            opts["planarconfig"] = "separate"
        if resolution_um is not None:
            meta.update(PhysicalSizeY=resolution_um[0], PhysicalSizeYUnit="µm", PhysicalSizeX=resolution_um[1],
                        PhysicalSizeXUnit="µm")  # fmt: skip
            opts.update(
                resolution=(1e4 / resolution_um[1], 1e4 / resolution_um[0]), resolutionunit="CENTIMETER"
            )

        def shape_of(s: TileStore) -> tuple[int, ...]:
            if planar_channels:
                return (s.channels, *s.shape)
            return s.shape if s.channels == 1 else (*s.shape, s.channels)

        def data_of(s: TileStore) -> Iterator[np.ndarray]:
            if planar_channels:
                for c in range(s.channels):
                    yield from _tiles(s, c)
            else:
                yield from _tiles(s, None)

        with tifffile.TiffWriter(tmp, bigtiff=True, ome=True) as tw:
            tw.write(data_of(store), shape=shape_of(store), subifds=len(stores) - 1, metadata=meta,
                     software="unet_fast", **opts)  # fmt: skip
            for level in stores[1:]:
                lopts = dict(opts)
                if resolution_um is not None:
                    k = store.shape[1] / level.shape[1]
                    lopts["resolution"] = (1e4 / (resolution_um[1] * k), 1e4 / (resolution_um[0] * k))
                tw.write(data_of(level), shape=shape_of(level), subfiletype=1, **lopts)
        os.replace(tmp, path)
    finally:
        for s in made:
            s.close()
            s.path.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return [s.shape for s in stores]
