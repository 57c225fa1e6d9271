"""EXIF / TIFF orientation is applied (issue 23, item 6): a phone JPEG tagged Orientation=6 reads, and is
segmented, in the orientation every viewer shows. All 8 orientations, in every container that carries the
tag: JPEG (EXIF), PNG (eXIf, 8-bit through Pillow and 16-bit through pypng), TIFF (the tag itself; through
tifffile, and through Pillow for a compression tifffile needs imagecodecs for), WebP (EXIF), and an MPO
(a JPEG with a second image appended, as phones write). Reference: Pillow's `ImageOps.exif_transpose`."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image, ImageOps, features

from unet_fast.cli import main
from unet_fast.inference.image_io import IMAGE_SUFFIXES, ORIENTATION_TAG, apply_orientation, read_image

H, W = 6, 11  # not square, odd: a swapped or mirrored axis shows
RNG = np.random.default_rng(6)


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    return exif.tobytes()


def _write(fmt: str, stored: np.ndarray, path, orientation: int) -> None:
    im = Image.fromarray(stored)
    if fmt == "jpeg":
        im.save(path, exif=_exif(orientation), quality=95)
    elif fmt in ("png", "png16"):
        im.save(path, exif=_exif(orientation))
    elif fmt == "webp":
        im.save(path, exif=_exif(orientation), lossless=True)
    elif fmt == "tiff":  # uncompressed: tifffile reads it
        tifffile.imwrite(path, stored, extratags=[(ORIENTATION_TAG, "H", 1, orientation, True)])
    elif fmt == "tiff-lzw":  # tifffile needs imagecodecs for LZW: Pillow reads it (where imagecodecs is absent)
        im.save(path, tiffinfo={ORIENTATION_TAG: orientation}, compression="tiff_lzw")
    elif fmt == "mpo":
        im.save(path, format="MPO", save_all=True, append_images=[Image.fromarray(stored[::2, ::2])],
                exif=_exif(orientation))  # fmt: skip


FORMATS = {"jpeg": ".jpg", "png": ".png", "png16": ".png", "webp": ".webp", "tiff": ".tif", "tiff-lzw": ".tif",
           "mpo": ".jpg"}  # fmt: skip


def _stored(fmt: str) -> np.ndarray:
    if fmt == "png16":
        return RNG.integers(0, 65536, (H, W), dtype=np.uint16)
    return RNG.integers(0, 256, (H, W, 3) if fmt in ("jpeg", "webp", "mpo") else (H, W), dtype=np.uint8)


def _shown(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """What a viewer shows for `pixels` stored with `orientation`: Pillow's exif_transpose of them."""
    im = Image.fromarray(pixels)
    im.info["exif"] = _exif(orientation)
    im.getexif()[ORIENTATION_TAG] = orientation
    return np.array(ImageOps.exif_transpose(im))


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_orientation_in_every_container_reads_as_displayed(fmt, orientation, tmp_path) -> None:
    if fmt == "webp" and not features.check("webp"):
        pytest.skip("this Pillow has no WebP support")
    stored = _stored(fmt)
    path = tmp_path / f"x{FORMATS[fmt]}"
    _write(fmt, stored, path, orientation)
    if fmt in ("jpeg", "mpo"):  # lossy: the decoded pixels in stored order (Pillow leaves JPEGs unrotated)
        with Image.open(path) as im:
            assert im.getexif().get(ORIENTATION_TAG) == orientation
            stored = np.array(im)
    top = 65535 if fmt == "png16" else 255
    got = read_image(path)
    assert got.shape[:2] == ((W, H) if orientation >= 5 else (H, W))  # 5-8 swap width and height
    shown = _shown(stored, orientation)
    np.testing.assert_array_equal(got, (shown.reshape(got.shape) / top).astype(np.float32))
    np.testing.assert_array_equal(shown, apply_orientation(stored, orientation))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_apply_orientation_is_pillows_exif_transpose(orientation) -> None:
    a = RNG.integers(0, 256, (5, 8, 3), dtype=np.uint8)
    im = Image.fromarray(a)
    im.getexif()[ORIENTATION_TAG] = orientation
    im.info["exif"] = _exif(orientation)
    expected = np.array(ImageOps.exif_transpose(im))
    got = apply_orientation(a, orientation)
    np.testing.assert_array_equal(got, expected)
    assert got.flags.c_contiguous


def test_unknown_orientation_values_are_ignored_as_pillow_does(tmp_path) -> None:
    a = RNG.integers(0, 256, (H, W), dtype=np.uint8)
    for value in (0, 9, 65535):
        Image.fromarray(a).save(tmp_path / "x.png", exif=_exif(value))
        np.testing.assert_array_equal(read_image(tmp_path / "x.png")[:, :, 0], a / np.float32(255))


def test_segment_writes_the_mask_in_the_displayed_orientation(tmp_path, capsys) -> None:
    """A phone photo tagged Orientation=6 (stored 64 x 96, shown 96 x 64): the mask has the displayed size
    and equals the mask of the same picture stored upright."""
    torch.set_num_threads(1)
    stored = RNG.integers(0, 256, (64, 96), dtype=np.uint8)
    Image.fromarray(stored).save(tmp_path / "phone.png", exif=_exif(6))
    Image.fromarray(np.rot90(stored, -1)).save(tmp_path / "upright.png")
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "phone.png"), str(tmp_path / "upright.png"), "--out", str(out),
                 "--backend", "reference", "--quiet"]) == 0  # fmt: skip
    capsys.readouterr()
    with Image.open(out / "phone_mask.png") as a, Image.open(out / "upright_mask.png") as b:
        assert a.size == (64, 96)  # width 64, height 96: as displayed
        np.testing.assert_array_equal(np.array(a), np.array(b))


def test_webp_is_an_input_where_pillow_reads_it() -> None:
    assert (".webp" in IMAGE_SUFFIXES) == features.check("webp")
