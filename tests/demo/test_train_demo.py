"""The demo training script, run for a few steps on tiny images (the shipped weights are not retrained
here), and the IoU arithmetic it reports."""

import json

import pytest
import torch

from unet_fast.cli import main
from unet_fast.demo.train import confusion, iou_from_confusion
from unet_fast.inference.model_card import load_model


def test_iou_from_confusion() -> None:
    pred = torch.tensor([0, 0, 1, 1, 2, 2])
    target = torch.tensor([0, 1, 1, 1, 2, 0])
    cm = confusion(pred, target, 4)
    assert int(cm.sum()) == 6 and int(cm[1, 0]) == 1  # rows: target, columns: prediction
    ious = iou_from_confusion(cm)
    assert ious[:3] == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert ious[3] != ious[3]  # a class absent from both maps has no IoU (NaN), not 0 or 1


def test_tiny_training_run_writes_a_loadable_model(tmp_path, capsys) -> None:
    argv = ["train-demo", "--out-dir", str(tmp_path), "--steps", "3", "--batch-size", "2",
            "--train-images", "4", "--val-images", "2", "--image-size", "32", "--val-size", "40",
            "--base-channels", "4", "--depth", "2", "--log-every", "1"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "step 3/3" in out and "validation mean IoU" in out
    card = json.loads((tmp_path / "demo_unet.json").read_text())
    assert 0 <= card["validation"]["mean_iou"] <= 1
    assert set(card["validation"]["per_class_iou"]) == {"background", "cell", "rectangle", "triangle", "line"}
    assert card["training"]["steps"] == 3 and card["training"]["command"].startswith("unet-fast train-demo")
    model, loaded = load_model(tmp_path / "demo_unet.pt")
    assert loaded.config["head"] == "softmax" and model.config.base_channels == 4
    assert (tmp_path / "demo_image.png").is_file() and (tmp_path / "demo_image_label.png").is_file()


def test_bad_option_is_exit_2(tmp_path, capsys) -> None:
    assert main(["train-demo", "--out-dir", str(tmp_path), "--steps", "0"]) == 2
    assert "--steps must be >= 1" in capsys.readouterr().err


def test_module_entry_point_is_seeded_and_repeatable(tmp_path, capsys) -> None:
    """Two runs with the same arguments give identical weights on one machine (data, init and batch order
    all come from seeds), and the card records the module command that made them."""
    from unet_fast.demo.train import main as train_main

    tiny = ["--steps", "2", "--batch-size", "2", "--train-images", "4", "--val-images", "1", "--image-size", "24",
            "--val-size", "24", "--base-channels", "4", "--depth", "1"]  # fmt: skip
    for run in ("a", "b"):
        assert train_main(["--out-dir", str(tmp_path / run), *tiny]) == 0
    capsys.readouterr()
    a = torch.load(tmp_path / "a" / "demo_unet.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "demo_unet.pt", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0)
    card = json.loads((tmp_path / "b" / "demo_unet.json").read_text())
    assert card["training"]["command"].startswith("python -m unet_fast.demo.train --out-dir")
