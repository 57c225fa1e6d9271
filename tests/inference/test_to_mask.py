"""masks.to_mask's class maps equal torch.argmax over the classes (first maximum on ties, NaN as the maximum)
for every class count a uint8 mask holds, in row chunks of any height."""

from __future__ import annotations

import pytest
import torch

from unet_fast.inference import masks
from unet_fast.inference.model_card import ModelCard


def _card(k: int, head: str = "softmax") -> ModelCard:
    config = {"in_channels": 1, "num_classes": k, "base_channels": 4, "depth": 2, "norm": "batch",
              "upsample": "transpose", "padding": "same", "head": head}  # fmt: skip
    return ModelCard(config, [0.5], [0.25], [f"c{i}" for i in range(k)])


@pytest.mark.parametrize("k", [2, 3, 7, 256])
@pytest.mark.parametrize("head", ["softmax", "logits"])
def test_class_map_is_argmax_with_ties_and_nan(k: int, head: str, monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(k)
    scores = torch.randint(0, 3, (k, 37, 53), generator=g).float()  # many ties
    scores[0, 0, 0] = float("nan")
    scores[k - 1, 1, 1] = float("nan")
    scores[:, 2, 2] = float("nan")
    want = scores.argmax(0).to(torch.uint8).numpy()
    monkeypatch.setattr(masks, "CHUNK_PIXELS", 53 * 5)  # chunks of 5 rows: the last one partial
    got = masks.to_mask(scores, _card(k, head))
    assert got.dtype == want.dtype and (got == want).all()
