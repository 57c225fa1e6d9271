"""Every head the model card accepts gives the mask a user of that model expects (issue 23, item 5), in
every command: softmax or logits over >= 2 channels -> argmax class index; one sigmoid channel -> p > 0.5
(one logit channel -> > 0) as 0 background / 1 foreground; sigmoid over 2..8 channels -> a multi-label bit
mask. Checked against a decision written out here on the reference model's blended output, with head
biases set so that every channel is above its threshold on about half of the pixels (a rule that ignored
the head, like the argmax over one channel that made every mask empty, cannot pass). Also: the legend, the
overlay colours, the sliding window's blending of sigmoid outputs, and the server's batching path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from unet_fast import UNet
from unet_fast.cli import main
from unet_fast.distributed.replay import segment_many
from unet_fast.inference.image_io import display_rgb, overlay, read_image
from unet_fast.inference.masks import label_fractions, mask_labels, mask_palette
from unet_fast.inference.model_card import DEFAULT_PALETTE, ModelCard
from unet_fast.inference.segmenter import Segmenter
from unet_fast.inference.sliding_window import sliding_window_inference

BASE = dict(in_channels=1, base_channels=4, depth=2, norm="batch", upsample="transpose", padding="same")
HEADS = [("softmax", 3), ("logits", 3), ("sigmoid", 1), ("logits", 1), ("sigmoid", 3), ("sigmoid", 8)]
PATCH = 32


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def _model(head: str, k: int, seed: int = 0) -> tuple[UNet, ModelCard]:
    """A random U-Net with lively BN statistics whose head biases put each channel's pre-activation median
    at 0 on a noise image (so sigmoid > 0.5 on about half of the pixels)."""
    torch.manual_seed(seed)
    cfg = BASE | {"num_classes": k, "head": head}
    model = UNet(**cfg).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 1.5)
    seen = []
    hook = model.head.register_forward_hook(lambda mod, inp, out: seen.append(out))
    with torch.no_grad():
        model(torch.randn(2, 1, 64, 64))
    hook.remove()
    with torch.no_grad():
        model.head.bias -= seen[0].transpose(0, 1).reshape(k, -1).median(dim=1).values
    names = [f"c{i}" for i in range(k)]
    return model, ModelCard(config=cfg, mean=[0.5], std=[0.25], class_names=names, patch_size=PATCH)


def _image(seed: int = 3, shape=(45, 70)) -> np.ndarray:
    return np.random.default_rng(seed).random((*shape, 1), dtype=np.float32)


def _expected(model: UNet, card: ModelCard, image: np.ndarray) -> np.ndarray:
    """The decision written out independently of unet_fast.inference.masks, on the whole image (the path the
    segmenter takes for an image this small: asserted where it runs)."""
    x = torch.from_numpy(((image - 0.5) / 0.25).transpose(2, 0, 1).copy())[None]
    with torch.no_grad():
        scores = model(x)[0].numpy()
    head, k = card.config["head"], card.num_classes
    if k >= 2 and head in ("softmax", "logits"):
        return scores.argmax(0).astype(np.uint8)
    cut = 0.0 if head == "logits" else 0.5
    if k == 1:
        return (scores[0] > cut).astype(np.uint8)
    return sum(((scores[i] > cut).astype(np.uint16) << i) for i in range(k)).astype(np.uint8)


@pytest.mark.parametrize(("head", "k"), HEADS)
def test_segmenter_mask_follows_the_head(head, k) -> None:
    model, card = _model(head, k)
    seg = Segmenter(model, card, backend="reference", patch_size=PATCH)
    image = _image()
    mask = seg.segment(image)
    assert seg.last_strategy is not None and seg.last_strategy.mode == "whole"
    expected = _expected(model, card, image)
    assert mask.dtype == np.uint8 and mask.shape == image.shape[:2]
    np.testing.assert_array_equal(mask, expected)
    if k == 1:
        assert 0.1 < mask.mean() < 0.9, mask.mean()  # both values present: not the all-zero mask
    elif head == "sigmoid":
        for i in range(k):  # every label both set and unset somewhere, and labels overlap
            assert 0.05 < ((mask >> i) & 1).mean() < 0.95
        assert (np.bitwise_count(mask) >= 2).any()
    else:
        assert len(np.unique(mask)) >= 2
    fractions = label_fractions(mask, card)
    assert len(fractions) == len(mask_labels(card))
    if head == "sigmoid" and k > 1:
        assert fractions == pytest.approx([((mask >> i) & 1).mean() for i in range(k)])
    else:
        assert fractions == pytest.approx(np.bincount(mask.ravel(), minlength=len(fractions)) / mask.size)


@pytest.mark.parametrize(("head", "k"), HEADS)
def test_cli_writes_that_mask_with_a_matching_legend_and_overlay(head, k, tmp_path, capsys) -> None:
    model, card = _model(head, k)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    card.save(tmp_path / "m.json")
    Image.fromarray((_image()[:, :, 0] * 255).astype(np.uint8)).save(tmp_path / "x.png")
    image = read_image(tmp_path / "x.png")
    assert main(["segment", str(tmp_path / "x.png"), "--weights", str(tmp_path / "m.pt"), "--out",
                 str(tmp_path / "out"), "--backend", "reference", "--quiet"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "inference: 1 whole" in printed
    with Image.open(tmp_path / "out" / "x_mask.png") as im:
        mask = np.array(im)
        table = np.array(im.getpalette()[: 3 * len(mask_palette(card))]).reshape(-1, 3)
    np.testing.assert_array_equal(mask, _expected(model, card, image))
    legend = json.loads((tmp_path / "out" / "legend.json").read_text())
    entries = [(e["value"], e["name"], e["rgb"], e["tinted_in_overlay"]) for e in legend["classes"]]
    colours = [list(c) for c in card.palette]
    if k == 1:  # background / foreground, the foreground in a colour (never the background's black)
        assert entries == [(0, "background", [0, 0, 0], False), (1, "c0", colours[0], True)]
        assert colours[0] == list(DEFAULT_PALETTE[1]) and legend["kind"] == "binary"
        assert "0 background #000000 (not tinted), 1 c0 #e6194b" in printed
    elif head == "sigmoid":
        assert entries == [(1 << i, f"c{i}", colours[i], True) for i in range(k)] and legend["kind"] == "multilabel"
        assert [e["bit"] for e in legend["classes"]] == list(range(k)) and "mask bit value" in printed
        assert [0, 0, 0] not in colours
        both = (1 << 0) | (1 << 1)  # labels 0 and 1: the mean of their colours
        assert table[both].tolist() == [round((a + b) / 2) for a, b in zip(colours[0], colours[1], strict=True)]
    else:
        assert entries == [(i, f"c{i}", colours[i], i != 0) for i in range(k)] and legend["kind"] == "classes"
    for value, _, rgb, _ in entries:  # the mask PNG's palette is the legend's
        assert table[value].tolist() == rgb
    with Image.open(tmp_path / "out" / "x_overlay.png") as im:
        rgb_out = np.array(im)
    base = display_rgb(image).astype(np.float32)
    fg = mask > 0
    np.testing.assert_array_equal(rgb_out[~fg], base[~fg].astype(np.uint8))
    tinted = (base * 0.5 + table[mask].astype(np.float32) * 0.5 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(rgb_out[fg], tinted[fg])
    np.testing.assert_array_equal(rgb_out, overlay(image, mask, mask_palette(card), 0.5))


@pytest.mark.parametrize(("head", "k"), [("sigmoid", 1), ("sigmoid", 3)])
def test_sliding_window_blends_sigmoid_outputs_as_probabilities(head, k) -> None:
    """Blending is a weighted mean per channel: sigmoid outputs stay in [0, 1]; one patch-sized image gets
    the model's own output; filler patches of the last batch never leak in (batch sizes agree)."""
    model, _ = _model(head, k)
    x = torch.randn(1, 1, 77, 50)
    blended = sliding_window_inference(x, model, PATCH, overlap=0.5, batch_size=3)
    assert 0 <= blended.min() and blended.max() <= 1 and blended.shape == (1, k, 77, 50)
    for b in (1, 2, 7):
        torch.testing.assert_close(sliding_window_inference(x, model, PATCH, 0.5, batch_size=b), blended,
                                   atol=1e-6, rtol=1e-5)  # fmt: skip
    one = torch.randn(1, 1, PATCH, PATCH)
    with torch.no_grad():
        torch.testing.assert_close(sliding_window_inference(one, model, PATCH), model(one), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(("head", "k"), [("sigmoid", 1), ("sigmoid", 3), ("softmax", 3)])
def test_server_batching_path_gives_the_same_masks(head, k) -> None:
    """`unet-fast serve` segments through replay.segment_many: the head's rule holds there too."""
    model, card = _model(head, k)
    seg = Segmenter(model, card, backend="reference", patch_size=PATCH, batch_size=3)
    images = [_image(5, (32, 32)), _image(6, (45, 70)), _image(7, (20, 90))]
    masks, _ = segment_many(seg, images)
    for got, image in zip(masks, images, strict=True):
        np.testing.assert_array_equal(got, seg.segment(image))


@pytest.mark.parametrize(("head", "k", "words"), [
    ("softmax", 1, "a softmax over one channel is 1 everywhere"),
    ("sigmoid", 9, "at most 8 labels"),
])  # fmt: skip
def test_cards_the_masks_cannot_express_are_refused(head, k, words) -> None:
    with pytest.raises(ValueError, match=f"^model card: .*{words}"):
        ModelCard(config=BASE | {"num_classes": k, "head": head}, mean=[0.5], std=[0.25],
                  class_names=[f"c{i}" for i in range(k)])  # fmt: skip
