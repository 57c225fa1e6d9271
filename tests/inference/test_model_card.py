"""Model cards (the JSON beside the weights) and loading a model from weights + card."""

import json

import pytest
import torch

from unet_fast import UNet
from unet_fast.inference.model_card import ModelCard, card_path_for, load_model, read_card

CONFIG = dict(in_channels=1, num_classes=3, base_channels=4, depth=2, norm="batch", upsample="transpose",
              padding="same", head="softmax")  # fmt: skip


def make_card(**kw) -> ModelCard:
    args = dict(config=CONFIG, mean=[0.3], std=[0.2], class_names=["bg", "a", "b"], patch_size=32)
    return ModelCard(**(args | kw))


def test_round_trip(tmp_path) -> None:
    card = make_card(extra={"validation": {"mean_iou": 0.5}})
    card.save(tmp_path / "m.json")
    back = read_card(tmp_path / "m.json")
    assert back.config == CONFIG and back.mean == [0.3] and back.std == [0.2]
    assert back.class_names == ["bg", "a", "b"] and back.patch_size == 32
    assert len(back.palette) == 3 and back.extra == {"validation": {"mean_iou": 0.5}}
    assert card_path_for(tmp_path / "m.pt") == tmp_path / "m.json"


@pytest.mark.parametrize("kw,msg", [(dict(mean=[0.1, 0.2]), "mean and std need 1"), (dict(std=[0.0]), "positive"),
                                    (dict(class_names=["x"]), "1 class names for 3"),
                                    (dict(palette=[[1, 2, 3]]), "palette needs 3"),
                                    (dict(config=CONFIG | {"depth": 0}), "depth must be >= 1")])  # fmt: skip
def test_invalid_cards(kw, msg) -> None:
    with pytest.raises(ValueError, match=msg):
        make_card(**kw)


def test_read_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="model card"):
        read_card(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_card(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="expected a JSON object with format"):
        read_card(tmp_path / "other.json")
    data = make_card().to_json()
    del data["normalization"]
    (tmp_path / "partial.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="lacks or mangles"):
        read_card(tmp_path / "partial.json")


def test_load_model_fp16_weights_and_mismatch(tmp_path) -> None:
    model = UNet(**CONFIG).eval()
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    torch.save(state, tmp_path / "m.pt")
    make_card().save(tmp_path / "m.json")
    loaded, card = load_model(tmp_path / "m.pt")
    assert not loaded.training and card.num_classes == 3
    for k, v in loaded.state_dict().items():
        assert v.dtype == model.state_dict()[k].dtype
        torch.testing.assert_close(v, state[k].to(v.dtype))
    make_card(config=CONFIG | {"base_channels": 8}).save(tmp_path / "m.json")
    with pytest.raises(ValueError, match="do not fit this UNet config"):
        load_model(tmp_path / "m.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read weights"):
        load_model(tmp_path / "junk.pt", tmp_path / "m.json")
    with pytest.raises(FileNotFoundError, match="weights file"):
        load_model(tmp_path / "missing.pt")
