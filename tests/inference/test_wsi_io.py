"""Whole-slide input and output (unet_fast/inference/slide_io.py): region reads equal the file's pixels for every
layout (tiled, strips, planar samples, pyramid levels, BigTIFF, .npy, zarr, OpenSlide where installed); a corrupt
or truncated tile is an error naming the tile; the tile store and the pyramidal OME BigTIFF writer round-trip."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile

from unet_fast.demo.synthetic_slide import expected_region, synthetic_slide
from unet_fast.inference.slide_io import SlideReadError, TileStore, open_slide, write_pyramid

REGIONS = [
    (0, 0, 1, 1),
    (0, 0, 37, 300),
    (100, 250, 300, 301),
    (255, 255, 2, 2),
    (599, 0, 1, 700),
    (0, 699, 600, 1),
]


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 65535, (600, 700, 3), dtype=np.uint16)


LAYOUTS = {
    "tiled-rgb": dict(tile=(256, 256), compression="zlib", photometric="rgb"),
    "tiled-planar": dict(tile=(128, 64), compression="zlib", photometric="rgb", planarconfig="separate"),
    "strips": dict(rowsperstrip=37, compression="zlib", photometric="rgb"),
    "bigtiff-uncompressed": dict(tile=(64, 64), photometric="rgb", bigtiff=True),
    "big-endian": dict(tile=(128, 128), photometric="rgb", byteorder=">"),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_tiff_regions_equal_pixels(tmp_path, rgb, layout) -> None:
    path = tmp_path / f"{layout}.tif"
    opts = dict(LAYOUTS[layout])
    data = rgb.transpose(2, 0, 1) if opts.get("planarconfig") == "separate" else rgb
    tifffile.imwrite(path, data, **opts)
    slide = open_slide(path)
    try:
        assert slide.shape == (600, 700, 3) and slide.dtype == np.uint16
        for y, x, h, w in REGIONS:
            got = slide.read(y, x, h, w)
            assert got.dtype == np.uint16 and got.dtype.isnative
            np.testing.assert_array_equal(got, rgb[y : y + h, x : x + w])
    finally:
        slide.close()


def test_pyramid_levels_and_gray(tmp_path) -> None:
    path = synthetic_slide(tmp_path / "s.tif", 1100, 900, tissue=0.3, seed=5)
    slide = open_slide(path)
    try:
        assert slide.levels == [(1100, 900), (550, 450), (275, 225)] and slide.shape == (1100, 900, 1)
        assert "OME-BigTIFF" in slide.kind and "tiles 256x256" in slide.kind
        for y, x, h, w in [(0, 0, 1100, 900), (300, 500, 400, 333), (1099, 899, 1, 1)]:
            np.testing.assert_array_equal(
                slide.read(y, x, h, w)[:, :, 0], expected_region(5, y, x, h, w, 256, 0.3)
            )
        with tifffile.TiffFile(path) as t:
            level1 = t.series[0].levels[1].asarray()
        np.testing.assert_array_equal(slide.read(10, 20, 200, 300, level=1)[:, :, 0], level1[10:210, 20:320])
        with pytest.raises(ValueError, match="outside level"):
            slide.read(1000, 0, 200, 10)
        with pytest.raises(ValueError, match="level 3 does not exist"):
            slide.read(0, 0, 1, 1, level=3)
    finally:
        slide.close()


@pytest.mark.parametrize("channels", [1, 3])
def test_npy_regions_by_positioned_reads(tmp_path, channels) -> None:
    a = np.random.default_rng(1).random((301, 257, channels)).astype(np.float32)
    np.save(tmp_path / "a.npy", a if channels > 1 else a[:, :, 0])
    slide = open_slide(tmp_path / "a.npy")
    try:
        assert slide.shape == (301, 257, channels)
        for y, x, h, w in [(0, 0, 301, 257), (5, 9, 30, 40), (300, 256, 1, 1), (0, 0, 7, 257)]:
            np.testing.assert_array_equal(slide.read(y, x, h, w), a[y : y + h, x : x + w])
    finally:
        slide.close()


def test_npy_truncated_and_object_refused(tmp_path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((100, 100), np.uint8))
    data = (tmp_path / "a.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(data[:-500])
    with pytest.raises(SlideReadError, match="truncated"):
        open_slide(tmp_path / "t.npy")
    np.save(tmp_path / "o.npy", np.array([[None, 1]], dtype=object), allow_pickle=True)
    with pytest.raises(SlideReadError, match="object arrays"):
        open_slide(tmp_path / "o.npy")


def test_zarr_regions(tmp_path) -> None:
    zarr = pytest.importorskip("zarr", reason="zarr is optional (unet_fast[wsi])")
    a = np.random.default_rng(2).integers(0, 255, (300, 200, 3), dtype=np.uint8)
    z = zarr.open(str(tmp_path / "a.zarr"), mode="w", shape=a.shape, chunks=(64, 64, 3), dtype=a.dtype)
    z[:] = a
    slide = open_slide(tmp_path / "a.zarr")
    np.testing.assert_array_equal(slide.read(10, 20, 100, 150), a[10:110, 20:170])


def test_openslide_format_without_openslide_says_what_to_install(tmp_path) -> None:
    try:
        import openslide  # noqa: F401

        pytest.skip("openslide is installed: the missing-package message is not reachable")
    except ImportError:
        pass
    (tmp_path / "x.ndpi").write_bytes(b"not really")
    with pytest.raises(SlideReadError, match="openslide-python"):
        open_slide(tmp_path / "x.ndpi")


def _tile_extent(path, index: int) -> tuple[int, int]:
    with tifffile.TiffFile(path) as t:
        page = t.pages[0]
        return int(page.dataoffsets[index]), int(page.databytecounts[index])


def test_corrupt_tile_is_an_error_naming_the_tile(tmp_path) -> None:
    data = np.random.default_rng(0).integers(0, 255, (600, 700), dtype=np.uint8)
    path = tmp_path / "c.tif"
    tifffile.imwrite(path, data, tile=(256, 256), compression="zlib")
    offset, count = _tile_extent(path, 4)  # row 1, column 1 (3 tiles per row)
    raw = bytearray(path.read_bytes())
    raw[offset : offset + count] = bytes(count)  # zeros: not a deflate stream
    path.write_bytes(bytes(raw))
    slide = open_slide(path)
    np.testing.assert_array_equal(slide.read(0, 0, 256, 700)[:, :, 0], data[:256])  # other tiles still read
    with pytest.raises(SlideReadError, match=r"level 0 tile 4 \(row 1, column 1\) at byte offset \d+, \d+ bytes: "
                       "cannot decode"):  # fmt: skip
        slide.read(300, 300, 10, 10)


def test_truncated_file_is_an_error_naming_the_tile(tmp_path) -> None:
    data = np.random.default_rng(0).integers(0, 255, (600, 700), dtype=np.uint8)
    path = tmp_path / "t.tif"
    tifffile.imwrite(path, data, tile=(256, 256), compression="zlib")
    last = 8
    offset, count = _tile_extent(path, last)
    with open(path, "r+b") as f:
        f.truncate(offset + count // 2)
    slide = open_slide(path)
    with pytest.raises(
        SlideReadError, match=r"tile 8 \(row 2, column 2\) at byte offset \d+: the file is truncated"
    ):
        slide.read(599, 699, 1, 1)


def test_large_png_refused_with_size_and_streaming_formats(tmp_path) -> None:
    from PIL import Image

    Image.new("RGB", (300, 200)).save(tmp_path / "big.png")
    with pytest.raises(SlideReadError) as e:
        open_slide(tmp_path / "big.png", max_decoded_bytes=1000)
    msg = str(e.value)
    assert "300 x 200 pixels" in msg and "tiled (pyramidal) TIFF" in msg and ".npy" in msg and "zarr" in msg
    assert open_slide(tmp_path / "big.png").shape == (200, 300, 3)  # under the limit: decoded whole


def test_unknown_suffix_and_missing_file(tmp_path) -> None:
    (tmp_path / "a.xyz").write_bytes(b"x")
    with pytest.raises(SlideReadError, match="unsupported slide type"):
        open_slide(tmp_path / "a.xyz")
    with pytest.raises(FileNotFoundError):
        open_slide(tmp_path / "none.tif")


# -- output ------------------------------------------------------------------------------------------------
def test_tile_store_sparse_and_pyramid_round_trip(tmp_path) -> None:
    h, w = 1000, 1300
    data = np.zeros((h, w), np.uint8)
    data[300:420, 600:1000] = np.random.default_rng(0).integers(1, 5, (120, 400))
    store = TileStore(tmp_path / "s.bin", (h, w), 1, np.uint8, 256)
    for y in range(0, h, 512):  # any order, in 512-pixel cores
        for x in reversed(range(0, w, 512)):
            store.write(y, x, data[y : y + 512, x : x + 512])
    store.sync()
    assert os.stat(tmp_path / "s.bin").st_blocks * 512 < store.grid[0] * store.grid[1] * store.block_bytes
    with pytest.raises(ValueError, match="not tile-aligned"):
        store.write(10, 0, data[:256, :256])
    out = tmp_path / "m.ome.tif"
    levels = write_pyramid(
        out, store, resolution_um=(0.25, 0.5), name="m", uuid="0a1b2c3d-0000-0000-0000-000000000000"
    )
    assert levels == [(1000, 1300), (500, 650), (250, 325), (125, 163)]
    with tifffile.TiffFile(out) as t:
        s = t.series[0]
        assert t.is_bigtiff and t.is_ome and s.axes == "YX" and len(s.levels) == 4
        page = s.levels[0].pages[0]
        assert page.is_tiled and (page.tilelength, page.tilewidth) == (256, 256) and page.compression == 8
        np.testing.assert_array_equal(s.levels[0].asarray(), data)
        for k in range(1, 4):
            np.testing.assert_array_equal(s.levels[k].asarray(), data[:: 2**k, :: 2**k])
        assert 'PhysicalSizeX="0.5"' in t.ome_metadata and 'PhysicalSizeY="0.25"' in t.ome_metadata
    first = out.read_bytes()
    write_pyramid(
        out, store, resolution_um=(0.25, 0.5), name="m", uuid="0a1b2c3d-0000-0000-0000-000000000000"
    )
    assert out.read_bytes() == first  # a given UUID makes the file reproducible
    assert not list(tmp_path.glob(".m.ome.tif.level*")) and not (tmp_path / "m.ome.tif.tmp").exists()


def test_planar_probabilities_pyramid(tmp_path) -> None:
    p = np.random.default_rng(1).integers(0, 255, (300, 280, 3), dtype=np.uint8)
    store = TileStore(tmp_path / "p.bin", (300, 280), 3, np.uint8, 128)
    store.write(0, 0, p)
    write_pyramid(tmp_path / "p.ome.tif", store, planar_channels=True)
    with tifffile.TiffFile(tmp_path / "p.ome.tif") as t:
        s = t.series[0]
        assert s.axes in ("CYX", "SYX") and s.shape == (3, 300, 280)  # one page, a plane per class
        np.testing.assert_array_equal(s.levels[0].asarray(), p.transpose(2, 0, 1))
        np.testing.assert_array_equal(s.levels[1].asarray(), p[::2, ::2].transpose(2, 0, 1))


def _hwm_mib() -> float:
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) / 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's VmHWM reset")
def test_pyramid_writer_memory_flat_in_image_size(tmp_path) -> None:
    """Writing a 16x larger mask (2k -> 8k square) does not raise the peak RSS by more than 8 MiB: tiles stream
    through tifffile in small encoding passes (its default pass gathers 512 MiB of tiles)."""
    growth = []
    for n in (2048, 8192):
        store = TileStore(tmp_path / f"{n}.bin", (n, n), 1, np.uint8, 256)
        store.write(0, 0, np.ones((512, 512), np.uint8))
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _hwm_mib()
        write_pyramid(tmp_path / f"{n}.ome.tif", store)
        growth.append(_hwm_mib() - before)
        store.close()
    assert growth[1] - growth[0] < 8, growth
