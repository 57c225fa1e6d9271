"""Segmenter.segment / prepare on in-memory images of every shape and dtype a user hands over (an [H, W] gray
array was an IndexError): the same mask as the unit-range float32 [H, W, C] image `read_image` returns, or a
ValueError naming the problem."""

from __future__ import annotations

import numpy as np
import pytest

from unet_fast.demo import bundled
from unet_fast.inference.segmenter import Segmenter


@pytest.fixture(scope="module")
def seg() -> Segmenter:
    return Segmenter.from_files(bundled.DEMO_WEIGHTS)


def _gray(h: int = 45, w: int = 61) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (h, w), dtype=np.uint8)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda g: g, id="uint8-HW"),
        pytest.param(lambda g: g[:, :, None], id="uint8-HW1"),
        pytest.param(lambda g: np.repeat(g[:, :, None], 3, axis=2), id="uint8-rgb"),
        pytest.param(lambda g: np.dstack([g, np.full_like(g, 255)]), id="uint8-gray-alpha"),
        pytest.param(lambda g: g.astype(np.uint16) * 257, id="uint16-HW"),
        pytest.param(lambda g: g.astype(np.float64) / 255, id="float64-HW"),
        pytest.param(lambda g: (g.astype(np.float32) / 255)[:, :, None], id="float32-HW1"),
    ],
)
def test_every_image_form_gives_the_mask_of_the_unit_range_image(seg: Segmenter, make) -> None:
    g = _gray()
    want = seg.segment((g.astype(np.float32) / 255)[:, :, None])
    got = seg.segment(make(g))
    assert got.shape == g.shape and got.dtype == np.uint8
    # the demo card is 1-channel: RGB of equal channels goes through luminance, equal up to float rounding
    assert (got == want).mean() >= 0.999
    assert len(np.unique(want)) > 1  # a lively mask, not all background


def test_bool_image_is_zero_one(seg: Segmenter) -> None:
    b = _gray() > 127
    assert np.array_equal(seg.segment(b), seg.segment(b.astype(np.float32)))


def test_the_callers_array_is_not_changed(seg: Segmenter) -> None:
    for a in (_gray(), _gray().astype(np.float32) / 255):
        before = a.copy()
        seg.segment(a)
        assert np.array_equal(a, before) and a.dtype == before.dtype


@pytest.mark.parametrize(
    "image, words",
    [
        (np.zeros((2, 8, 8, 1), np.uint8), "expected an H x W or H x W x C image"),
        (np.zeros((8,), np.uint8), "expected an H x W or H x W x C image"),
        (np.zeros((8, 8, 5), np.uint8), "expected an H x W or H x W x C image"),
        (np.zeros((0, 8), np.uint8), "empty"),
        (np.full((8, 8), np.nan, np.float32), "NaN or infinite"),
        (np.full((8, 8, 1), np.inf, np.float64), "NaN or infinite"),
        (np.zeros((8, 8), np.complex64), "unsupported pixel type"),
        (np.zeros((8, 8, 2, 1), np.uint8), "expected an H x W"),
    ],
)
def test_bad_images_get_a_clear_value_error(seg: Segmenter, image: np.ndarray, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        seg.segment(image)
