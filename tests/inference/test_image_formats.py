"""The same pixel data reads to the same array from every container and bit depth we accept (issue 12,
fault 2): PNG 8/16-bit gray, gray+alpha, RGB, RGBA; TIFF little- and big-endian, 8/16/32-bit integers and
32-bit floats, contiguous and planar, written by tifffile and by Pillow (uncompressed and LZW); `.npy`.
Expected values: the integers divided by their dtype's maximum, floats as they are (read_image's rule)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from unet_fast.inference.image_io import read_image

RNG = np.random.default_rng(12)
H, W = 7, 5  # odd sizes: a row-length or stride mistake shows


def _data(dtype: str, channels: int) -> np.ndarray:
    shape = (H, W) if channels == 1 else (H, W, channels)
    if dtype == "float32":
        return (RNG.standard_normal(shape) * 3).astype(np.float32)  # negative and > 1: kept as is
    info = np.iinfo(dtype)
    a = RNG.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    a.flat[0], a.flat[-1] = info.min, info.max  # the extremes must survive (no clipping, no narrowing)
    return a


def _expected(a: np.ndarray) -> np.ndarray:
    hwc = a if a.ndim == 3 else a[:, :, None]
    if a.dtype.kind == "f":
        return hwc.astype(np.float32)
    return (hwc.astype(np.float64) / np.iinfo(a.dtype).max).astype(np.float32)


def _png_pillow(a: np.ndarray, path: Path) -> None:
    Image.fromarray(a).save(path)


def _png_pypng(a: np.ndarray, path: Path) -> None:
    import png

    planes = 1 if a.ndim == 2 else a.shape[2]
    writer = png.Writer(W, H, greyscale=planes in (1, 2), alpha=planes in (2, 4), bitdepth=a.dtype.itemsize * 8)
    with path.open("wb") as f:
        writer.write(f, a.reshape(H, W * planes))


def _tiff(byteorder: str, planar: bool = False):
    def write(a: np.ndarray, path: Path) -> None:
        if a.ndim == 2:
            tifffile.imwrite(path, a, byteorder=byteorder, photometric="minisblack")
        elif planar:
            tifffile.imwrite(path, np.moveaxis(a, 2, 0), byteorder=byteorder, planarconfig="separate",
                             photometric="rgb" if a.shape[2] >= 3 else "minisblack",
                             extrasamples=["unassalpha"] if a.shape[2] in (2, 4) else None)  # fmt: skip
        else:
            tifffile.imwrite(path, a, byteorder=byteorder, planarconfig="contig",
                             photometric="rgb" if a.shape[2] >= 3 else "minisblack",
                             extrasamples=["unassalpha"] if a.shape[2] in (2, 4) else None)  # fmt: skip

    return write


def _tiff_pillow(compression: str | None, big_endian: bool = False):
    def write(a: np.ndarray, path: Path) -> None:
        if a.dtype == np.uint16:
            mode = "I;16B" if big_endian else "I;16"
            im = Image.frombytes(mode, (W, H), a.astype(">u2" if big_endian else "<u2").tobytes())
        else:
            im = Image.fromarray(a)
        im.save(path, compression=compression)

    return write


def _npy(a: np.ndarray, path: Path) -> None:
    np.save(path, a)


def _npy_big_endian(a: np.ndarray, path: Path) -> None:
    np.save(path, a.astype(a.dtype.newbyteorder(">")))


TIFF_ALL = {"tiff-le": _tiff("<"), "tiff-be": _tiff(">")}
# (dtype, channels) -> the writers that can hold that data exactly
CASES: dict[tuple[str, int], dict] = {
    ("uint8", 1): {"png": _png_pillow, **TIFF_ALL, "tiff-pillow": _tiff_pillow(None),
                   "tiff-pillow-lzw": _tiff_pillow("tiff_lzw"), "npy": _npy},
    ("uint8", 2): {"png": _png_pillow, **TIFF_ALL, "tiff-le-planar": _tiff("<", True), "npy": _npy},
    ("uint8", 3): {"png": _png_pillow, **TIFF_ALL, "tiff-be-planar": _tiff(">", True),
                   "tiff-pillow-lzw": _tiff_pillow("tiff_lzw"), "npy": _npy},
    ("uint8", 4): {"png": _png_pillow, **TIFF_ALL, "npy": _npy},
    ("uint16", 1): {"png-pillow": _png_pillow, "png-pypng": _png_pypng, **TIFF_ALL,
                    "tiff-pillow-I;16": _tiff_pillow(None), "tiff-pillow-I;16B": _tiff_pillow(None, True),
                    "tiff-pillow-I;16B-lzw": _tiff_pillow("tiff_lzw", True), "npy": _npy,
                    "npy-be": _npy_big_endian},
    ("uint16", 2): {"png": _png_pypng, **TIFF_ALL, "npy": _npy},
    ("uint16", 3): {"png": _png_pypng, **TIFF_ALL, "tiff-be-planar": _tiff(">", True), "npy": _npy},
    ("uint16", 4): {"png": _png_pypng, **TIFF_ALL, "tiff-le-planar": _tiff("<", True), "npy": _npy},
    ("int16", 1): {**TIFF_ALL, "npy": _npy},
    ("int32", 1): {**TIFF_ALL, "tiff-pillow": _tiff_pillow(None), "npy": _npy},
    ("uint32", 1): {**TIFF_ALL, "npy": _npy},
    ("int32", 3): {**TIFF_ALL, "npy": _npy},
    ("float32", 1): {**TIFF_ALL, "tiff-pillow": _tiff_pillow(None), "npy": _npy, "npy-be": _npy_big_endian},
    ("float32", 3): {**TIFF_ALL, "tiff-be-planar": _tiff(">", True), "npy": _npy},
}  # fmt: skip
SUFFIX = {"png": ".png", "tif": ".tif", "npy": ".npy"}


@pytest.mark.parametrize(("dtype", "channels"), list(CASES), ids=[f"{d}x{c}" for d, c in CASES])
def test_every_container_reads_the_same_array(dtype: str, channels: int, tmp_path) -> None:
    data = _data(dtype, channels)
    want = _expected(data)
    for name, write in CASES[(dtype, channels)].items():
        path = tmp_path / f"{name}{SUFFIX[name[:3] if name[:3] in SUFFIX else 'tif']}"
        write(data, path)
        got = read_image(path)
        assert got.dtype == np.float32 and got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
        np.testing.assert_array_equal(got, want, err_msg=f"{name} reads other values than the data written")


def test_big_endian_16bit_tiff_1x2_is_not_clipped(tmp_path) -> None:
    """The issue's case: Pillow's convert('I;16') turned [7, 1007] into [7, 255]."""
    path = tmp_path / "be.tif"
    Image.frombytes("I;16B", (2, 1), np.array([7, 1007], ">u2").tobytes()).save(path)
    with Image.open(path) as im:
        assert im.mode == "I;16B"
    got = read_image(path)
    np.testing.assert_array_equal(got, np.array([[[7], [1007]]], np.float32) / np.float32(65535))
    assert got[0, 1, 0] * 65535 == pytest.approx(1007)


def test_segment_of_a_big_endian_16bit_tiff_is_not_all_background(tmp_path) -> None:
    """What the user saw: the clipped read gave a flat image and an all-background mask (exit 0). A model
    that thresholds the raw intensity sees the data now: pixels above 0.01 (655 of 65535) are class 1."""
    import torch

    from unet_fast.inference.model_card import ModelCard
    from unet_fast.inference.segmenter import Segmenter
    from unet_fast.models.unet import UNet

    values = np.array([[7, 1007] * 8] * 16, ">u2")
    path = tmp_path / "cells.tif"
    Image.frombytes("I;16B", (16, 16), values.tobytes()).save(path)
    cfg = dict(in_channels=1, num_classes=2, base_channels=2, depth=1, norm=None, padding="same", head="logits")
    model = UNet(**cfg).eval()
    card = ModelCard(config=cfg, mean=[0.0], std=[1.0], class_names=["bg", "fg"], patch_size=16)
    seg = Segmenter(model, card, backend="reference", batch_size=1)
    seg.runner.predict = lambda x: torch.cat([torch.full_like(x, 0.01), x], dim=1)  # class 1 where x > 0.01
    mask = seg.segment(read_image(path))
    np.testing.assert_array_equal(mask, (values.astype(np.int64) > 655).astype(np.uint8))


@pytest.mark.parametrize(
    ("write", "match"),
    [
        (lambda p: tifffile.imwrite(p, np.zeros((3, 4, 5), np.uint8), photometric="minisblack",
                                    metadata={"axes": "ZYX"}), r"3 frames \(a stack\)"),
        (lambda p: tifffile.imwrite(p, np.zeros((4, 5, 6), np.uint8), photometric="minisblack",
                                    planarconfig="contig"), r"C in 1\.\.4 channels"),
        (lambda p: tifffile.imwrite(p, np.zeros((4, 5), np.complex64)), "unsupported pixel type complex64"),
        (lambda p: p.write_bytes(b"II*\x00garbage"), "cannot read .* as a TIFF image"),
    ],
    ids=["z-stack", "6-channels", "complex", "corrupt"],
)  # fmt: skip
def test_unsupported_or_broken_tiffs_are_clear_errors(write, match, tmp_path) -> None:
    path = tmp_path / "bad.tif"
    write(path)
    with pytest.raises(ValueError, match=match):
        read_image(path)


def test_unsupported_pillow_mode_is_a_clear_error(tmp_path, monkeypatch) -> None:
    """A pixel mode we have no exact decoding for is named, never converted to something else."""
    from unet_fast.inference import image_io

    Image.new("L", (3, 2)).save(tmp_path / "x.png")
    monkeypatch.setattr(image_io.Image, "open", lambda path: Image.new("La", (3, 2)))
    with pytest.raises(ValueError, match=r"x\.png: unsupported pixel mode 'La'"):
        read_image(tmp_path / "x.png")


def test_other_colour_models_read_as_rgb(tmp_path) -> None:
    Image.new("CMYK", (3, 2), (0, 255, 0, 0)).save(tmp_path / "c.jpg", quality=100)
    Image.new("LAB", (3, 2)).save(tmp_path / "lab.tif", compression="tiff_lzw")  # LZW: read by Pillow
    assert read_image(tmp_path / "c.jpg").shape == (2, 3, 3)
    assert read_image(tmp_path / "lab.tif").shape == (2, 3, 3)


class _PillowTiff:
    """What _pillow_tiff_is_exact reads of a Pillow TIFF: its mode and tags (BitsPerSample, SampleFormat)."""

    def __init__(self, mode: str, tags: dict) -> None:
        self.mode, self.tag_v2 = mode, tags


@pytest.mark.parametrize(("mode", "tags", "exact"), [
    ("RGB", {258: (16, 16, 16)}, False),  # 16-bit RGB: Pillow narrows to 8 bits
    ("RGBA", {258: (16, 16, 16, 16)}, False),
    ("I;16B", {258: (16,)}, True),
    ("RGB", {258: (8, 8, 8)}, True),
    ("I", {258: (32,), 339: (1,)}, False),  # uint32 read as int32
    ("I", {258: (32,), 339: (2,)}, True),
    ("F", {258: (32,), 339: (3,)}, True),
])  # fmt: skip
def test_compressed_tiffs_pillow_would_narrow_are_refused(mode: str, tags: dict, exact: bool) -> None:
    """LZW/JPEG TIFFs need imagecodecs in tifffile; Pillow reads them, except where it would narrow the
    samples: there read_image says to install imagecodecs (no such file can be written here without it)."""
    from unet_fast.inference.image_io import _pillow_tiff_is_exact

    assert _pillow_tiff_is_exact(_PillowTiff(mode, tags)) is exact
