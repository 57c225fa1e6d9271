"""Which path `Segmenter` and `unet-fast segment` take (issue 29): the whole image when it fits the memory budget
(the model's own answer), exact halo tiles when it does not, the blended window when asked (or for models not
exact under tiling), named in the output; slides go the streaming path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from unet_fast.bench.workloads import lively_weights
from unet_fast.cli import main
from unet_fast.demo.synthetic_slide import synthetic_slide
from unet_fast.inference.model_card import ModelCard
from unet_fast.inference.segmenter import Segmenter
from unet_fast.inference.sliding_window import sliding_window_inference
from unet_fast.inference.wsi import is_slide
from unet_fast.models.unet import UNet

CONFIG = {"in_channels": 1, "num_classes": 3, "base_channels": 4, "depth": 3}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("modes")
    model = lively_weights(UNet(**CONFIG))
    torch.save(model.state_dict(), root / "m.pt")
    ModelCard(config=model.config_dict(), mean=[0.3], std=[0.2], class_names=["bg", "a", "b"], patch_size=64).save(
        root / "m.json")  # fmt: skip
    return root, model


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w, 1)).astype(np.float32)


def _ties(probs: torch.Tensor) -> np.ndarray:
    top2 = probs.topk(2, dim=0).values
    return ((top2[0] - top2[1]) >= 1e-4).numpy()


def test_whole_when_it_fits_exact_tiles_when_not_blended_when_asked(files) -> None:
    root, model = files
    image = _image(211, 237)
    seg = Segmenter.from_files(root / "m.pt", backend="reference", batch_size=3, tile=64)
    with torch.no_grad():
        whole = model(seg.prepare(image))[0]
    mask = seg.segment(image)
    assert seg.last_strategy.mode == "whole" and "MiB of activations" in seg.last_strategy.reason
    np.testing.assert_array_equal(mask, whole.argmax(0).numpy())  # the same call: bit for bit

    seg.memory_budget = 1  # nothing fits whole: exact tiles
    mask = seg.segment(image)
    assert seg.last_strategy.mode == "exact" and "over the budget" in seg.last_strategy.reason
    assert (mask == whole.argmax(0).numpy())[_ties(whole)].all()

    seg.mode = "blended"
    probs = seg.probabilities(image)
    assert seg.last_strategy.mode == "blended"
    expected = sliding_window_inference(
        seg.prepare(image), seg.runner.predict, 64, overlap=0.5, batch_size=3
    )[0]
    torch.testing.assert_close(probs, expected, rtol=0, atol=0)


def test_engine_segment_whole_equals_engine_call(files) -> None:
    root, _ = files
    seg = Segmenter.from_files(root / "m.pt", backend="cpu")
    image = _image(128, 128, 1)
    mask = seg.segment(image)
    assert seg.last_strategy.mode == "whole" and seg.runner.engine is not None
    with torch.no_grad():
        direct = seg.runner.engine(seg.prepare(image))[0].argmax(0).numpy()
    np.testing.assert_array_equal(mask, direct)


def test_tiny_image_takes_the_padding_window(files) -> None:
    root, _ = files
    seg = Segmenter.from_files(root / "m.pt", backend="reference")
    seg.segment(_image(5, 40))  # below the model's minimum size (8) on one side
    assert seg.last_strategy.mode == "blended" and "smaller" in seg.last_strategy.reason


def test_segment_command_names_the_path_and_streams_slides(files, tmp_path, capsys) -> None:
    root, _ = files
    from PIL import Image

    Image.fromarray((np.random.default_rng(0).random((150, 170)) * 255).astype(np.uint8)).save(
        tmp_path / "a.png"
    )
    slide = synthetic_slide(tmp_path / "s.tif", 600, 520, tissue=0.5, seed=1)
    assert is_slide(slide) and not is_slide(tmp_path / "a.png")
    out = tmp_path / "out"
    base = ["segment", "--weights", str(root / "m.pt"), "--out", str(out), "--quiet", "--backend", "reference",
            "--tile", "256"]  # fmt: skip
    assert main([*base, str(tmp_path / "a.png"), str(slide)]) == 0
    printed = capsys.readouterr().out
    assert "inference: 1 whole, 1 exact tiles (slide)" in printed
    assert (out / "a_mask.png").is_file() and (out / "s_mask.ome.tif").is_file()
    meta = json.loads((out / "s_wsi.json").read_text())
    assert meta["complete"] and meta["strategy"] == "exact"
    # --wsi streams an ordinary image too; --mode blended is named
    assert main([*base, "--wsi", "--mode", "blended", str(tmp_path / "a.png")]) == 0
    assert "1 blended tiles (slide)" in capsys.readouterr().out
    assert json.loads((out / "a_wsi.json").read_text())["strategy"] == "blended"
