"""The bundled demo model end to end: `unet-fast segment --demo` writes a mask equal to the reference
model's (the engine's, where unet_fast.optimize exists, must agree), and the shipped model card tells the
truth about the shipped weights."""

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from unet_fast.cli import main
from unet_fast.demo import bundled
from unet_fast.demo.train import confusion, iou_from_confusion
from unet_fast.inference.image_io import read_image
from unet_fast.inference.segmenter import Segmenter


@pytest.fixture(scope="module")
def reference() -> Segmenter:
    return Segmenter.from_files(bundled.DEMO_WEIGHTS, backend="reference")


@pytest.fixture(scope="module")
def demo_image() -> np.ndarray:
    return read_image(bundled.DEMO_IMAGE)


@pytest.fixture(scope="module")
def reference_mask(reference, demo_image) -> np.ndarray:
    """The reference model's sliding-window mask of the demo image (computed once for the module)."""
    return reference.segment(demo_image)


def test_card_describes_the_shipped_weights() -> None:
    card = json.loads(bundled.DEMO_CARD.read_text())
    data = bundled.DEMO_WEIGHTS.read_bytes()
    assert card["weights_sha256"] == hashlib.sha256(data).hexdigest()
    assert len(data) < 2_000_000
    assert card["model"]["num_classes"] == 5 and card["model"]["head"] == "softmax"
    assert card["training"]["command"].startswith(("python -m unet_fast.demo.train", "unet-fast train-demo"))
    assert 0 < card["validation"]["mean_iou"] <= 1


def test_segment_demo_matches_the_reference_model(
    tmp_path, capsys, reference, demo_image, reference_mask
) -> None:
    assert demo_image.shape[0] > reference.patch and demo_image.shape[1] > reference.patch  # windows are used
    assert main(["segment", "--demo", "--out", str(tmp_path)]) == 0  # default backend: auto (engine if any)
    err = capsys.readouterr().err
    with Image.open(tmp_path / "demo_image_mask.png") as im:
        assert im.mode == "P"
        mask = np.array(im)
    with Image.open(tmp_path / "demo_image_overlay.png") as im:
        assert im.mode == "RGB" and im.size == (demo_image.shape[1], demo_image.shape[0])
    expected = reference_mask
    assert mask.shape == expected.shape == demo_image.shape[:2]
    if "runs on: reference PyTorch model" in err:
        np.testing.assert_array_equal(mask, expected)
    else:  # the fused engine: argmax may flip only where two classes tie to rounding
        assert (mask == expected).mean() >= 0.999, err


def test_blending_is_close_to_whole_image_inference(reference, demo_image, reference_mask) -> None:
    """The Gaussian-blended windows agree with running the whole image through the reference model at once
    (the U-Net sees more context there, so a few border pixels may differ)."""
    windowed = reference_mask
    with torch.no_grad():
        whole = reference.model(reference.prepare(demo_image)).argmax(1)[0].numpy()
    assert (windowed == whole).mean() >= 0.995


def test_demo_mask_matches_the_ground_truth(reference_mask) -> None:
    with Image.open(bundled.DEMO_LABEL) as im:
        truth = torch.from_numpy(np.array(im)).long()
    pred = torch.from_numpy(reference_mask).long()
    ious = iou_from_confusion(confusion(pred, truth, 5))
    assert float(np.nanmean(ious)) >= 0.75, ious
