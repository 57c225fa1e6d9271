"""Image reading (PNG gray/RGB/RGBA/palette, 16-bit TIFF, .npy), channel matching, mask and overlay writing."""

import numpy as np
import pytest
from PIL import Image

from unet_fast.inference.image_io import (
    display_rgb,
    match_channels,
    normalize,
    overlay,
    read_image,
    to_unit_range,
    write_mask,
)

RNG = np.random.default_rng(0)


def test_gray_png(tmp_path) -> None:
    a = RNG.integers(0, 256, (21, 34), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "g.png")
    got = read_image(tmp_path / "g.png")
    assert got.shape == (21, 34, 1) and got.dtype == np.float32
    np.testing.assert_allclose(got[:, :, 0], a / 255, atol=1e-7)


@pytest.mark.parametrize("mode,channels", [("RGB", 3), ("RGBA", 4), ("LA", 2)])
def test_colour_png(tmp_path, mode, channels) -> None:
    a = RNG.integers(0, 256, (9, 11, channels), dtype=np.uint8)
    Image.fromarray(a, mode=mode).save(tmp_path / "c.png")
    got = read_image(tmp_path / "c.png")
    np.testing.assert_allclose(got, a / 255, atol=1e-7)


def test_palette_png_reads_its_colours(tmp_path) -> None:
    im = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8)).convert("P")
    im.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    im.save(tmp_path / "p.png")
    got = read_image(tmp_path / "p.png")
    assert got.shape == (2, 2, 3)
    np.testing.assert_allclose(got[0, 1] * 255, [200, 100, 50], atol=1e-4)


def test_16bit_tiff(tmp_path) -> None:
    a = RNG.integers(0, 65536, (17, 23), dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / "d.tif")
    got = read_image(tmp_path / "d.tif")
    assert got.shape == (17, 23, 1)
    np.testing.assert_allclose(got[:, :, 0], a / 65535, atol=1e-6)


def test_float_tiff_kept_as_is(tmp_path) -> None:
    a = RNG.random((8, 5), dtype=np.float32) * 3
    Image.fromarray(a).save(tmp_path / "f.tiff")
    np.testing.assert_array_equal(read_image(tmp_path / "f.tiff")[:, :, 0], a)


@pytest.mark.parametrize("shape", [(12, 13), (12, 13, 1), (12, 13, 3), (12, 13, 4)])
def test_npy(tmp_path, shape) -> None:
    a = RNG.random(shape).astype(np.float64)
    np.save(tmp_path / "a.npy", a)
    got = read_image(tmp_path / "a.npy")
    assert got.shape == (12, 13, shape[2] if len(shape) == 3 else 1)
    np.testing.assert_allclose(got.reshape(a.shape), a, rtol=1e-6)


@pytest.mark.parametrize("shape", [(12, 13, 5), (2, 3, 4, 5), (7,)])
def test_npy_bad_shape_is_value_error(tmp_path, shape) -> None:
    np.save(tmp_path / "bad.npy", np.zeros(shape, np.float32))
    with pytest.raises(ValueError, match=r"expected an H x W or H x W x C image"):
        read_image(tmp_path / "bad.npy")


def test_read_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "x.gif").write_bytes(b"GIF89a")
    with pytest.raises(ValueError, match="unsupported file type"):
        read_image(tmp_path / "x.gif")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ValueError, match="cannot read"):
        read_image(tmp_path / "broken.png")
    np.save(tmp_path / "nan.npy", np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="NaN"):
        read_image(tmp_path / "nan.npy")


def test_multiframe_tiff_is_rejected(tmp_path) -> None:
    frames = [Image.fromarray(np.full((4, 4), i, np.uint8)) for i in range(3)]
    frames[0].save(tmp_path / "stack.tif", save_all=True, append_images=frames[1:])
    with pytest.raises(ValueError, match="3 frames"):
        read_image(tmp_path / "stack.tif")


def test_unit_range_rules() -> None:
    np.testing.assert_allclose(to_unit_range(np.array([0, 255], np.uint8)), [0, 1])
    np.testing.assert_allclose(to_unit_range(np.array([0, 65535], np.uint16)), [0, 1])
    np.testing.assert_array_equal(to_unit_range(np.array([True, False])), [1, 0])
    with pytest.raises(ValueError, match="unsupported pixel type"):
        to_unit_range(np.array(["a"]))


def test_match_channels_rules() -> None:
    rgb = RNG.random((5, 6, 3)).astype(np.float32)
    gray = match_channels(rgb, 1)
    np.testing.assert_allclose(gray[:, :, 0], rgb @ np.array([0.299, 0.587, 0.114]), rtol=1e-5)
    rgba = np.concatenate([rgb, np.ones((5, 6, 1), np.float32)], axis=2)
    np.testing.assert_array_equal(match_channels(rgba, 3), rgb)  # alpha dropped
    np.testing.assert_array_equal(match_channels(gray, 3), np.repeat(gray, 3, axis=2))
    la = np.concatenate([gray, gray], axis=2)
    np.testing.assert_array_equal(match_channels(la, 1), gray)
    with pytest.raises(ValueError, match="takes 2 channel"):
        match_channels(rgb, 2)


def test_normalize_is_per_channel_chw() -> None:
    x = RNG.random((4, 5, 3)).astype(np.float32)
    got = normalize(x, [0.1, 0.2, 0.3], [1.0, 2.0, 4.0])
    assert got.shape == (3, 4, 5)
    np.testing.assert_allclose(got[2], (x[:, :, 2] - 0.3) / 4, rtol=1e-6)


def test_write_mask_keeps_indices_and_palette(tmp_path) -> None:
    mask = RNG.integers(0, 5, (19, 23), dtype=np.uint8)
    palette = [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]]
    write_mask(mask, palette, tmp_path / "m.png")
    with Image.open(tmp_path / "m.png") as im:
        assert im.mode == "P"
        np.testing.assert_array_equal(np.array(im), mask)
        assert im.getpalette()[:15] == [v for c in palette for v in c]
    with pytest.raises(ValueError, match="uint8"):
        write_mask(mask.astype(np.int64), palette, tmp_path / "bad.png")


def test_overlay_tints_only_foreground() -> None:
    image = RNG.random((6, 7, 1)).astype(np.float32)
    mask = np.zeros((6, 7), np.uint8)
    mask[2:4, 3:5] = 2
    palette = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]
    out = overlay(image, mask, palette, alpha=0.5)
    base = display_rgb(image)
    assert out.shape == (6, 7, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[mask == 0], base[mask == 0])
    expected = (base[mask == 2].astype(np.float32) * 0.5 + np.array([0, 255, 0]) * 0.5 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(out[mask == 2], expected)
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, mask, palette, alpha=2)


def test_display_rgb_stretches_dim_images() -> None:
    dim = (RNG.random((10, 10, 1)) * 0.05).astype(np.float32)  # a 12-bit image read as 16-bit looks like this
    out = display_rgb(dim)
    assert out.shape == (10, 10, 3) and out.max() >= 250
