"""Capture: ATen patterns normalise into the op vocabulary; unknown ops become fallbacks; eval mode enforced."""

from __future__ import annotations

import pytest
import torch
from graph_helpers import graph_of, randomize
from torch import nn

from unet_fast import UNet
from unet_fast.graph.capture import capture


def test_unet_ops_normalise() -> None:
    m = randomize(UNet(3, 2, 4, 3, "batch", "bilinear", padding="same"))
    x = torch.randn(1, 3, 20, 28)
    g = graph_of(m, x)
    ops = {n.op for n in g.nodes}
    # 20 -> 10 -> 5 -> 2: the 4-row upsample of the 2-row level is zero-padded to 5 rows ("window")
    assert ops == {"input", "conv", "batch_norm", "act", "max_pool", "resample", "window", "cat", "softmax"}
    assert g.count("fallback") == 0
    torch.testing.assert_close(g.evaluate(x), m(x), atol=1e-6, rtol=1e-6)


def test_unknown_op_becomes_a_fallback_node() -> None:
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.gn = nn.Conv2d(3, 4, 3, padding=1), nn.GroupNorm(2, 4)
            self.b = nn.Conv2d(4, 2, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.tanh(self.gn(self.a(x))))

    m = Odd().eval()
    x = torch.randn(1, 3, 6, 6)
    g = graph_of(m, x)
    assert g.count("fallback") >= 2  # group norm, tanh
    torch.testing.assert_close(g.evaluate(x), m(x))


def test_training_mode_is_refused() -> None:
    m = UNet(3, 2, 4, 2).train()
    with pytest.raises(ValueError, match=r"training mode.*model\.eval\(\)"):
        capture(m, torch.randn(1, 3, 16, 16))
    m.eval()
    m.encoders[0][1].train()  # one BatchNorm left in training mode
    with pytest.raises(ValueError, match=r"encoders\.0\.1"):
        capture(m, torch.randn(1, 3, 16, 16))


@pytest.mark.parametrize(("norm", "says", "not_says"), [
    (torch.nn.InstanceNorm2d(4, track_running_stats=True), "InstanceNorm2d", "BatchNorm"),
    (torch.nn.GroupNorm(2, 4), "training mode", "BatchNorm"),
    (torch.nn.BatchNorm2d(4), "BatchNorm2d would normalise with the batch's statistics", "InstanceNorm"),
])  # fmt: skip
def test_training_mode_refusal_names_what_training_changes(norm: torch.nn.Module, says: str, not_says: str) -> None:
    """Issue 23: an InstanceNorm model in training mode was told about BatchNorm."""
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), norm).train()
    with pytest.raises(ValueError, match="training mode") as e:
        capture(m, torch.randn(1, 3, 16, 16))
    assert says in str(e.value) and not_says not in str(e.value), str(e.value)
