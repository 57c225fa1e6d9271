"""The training-mode refusal says what is wrong for each module (issue 23, item 10): it is a typed
TrainingModeError (a ValueError), names every module whose training mode changes the result and why (the
root: its forward may branch on self.training; BatchNorm: batch statistics; InstanceNorm with running
statistics: instance statistics; Dropout: random zeros), and never blames BatchNorm in a model that has
none. Modules whose result does not depend on the mode (InstanceNorm without running statistics, GroupNorm)
are not refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import unet_fast
from unet_fast import TrainingModeError
from unet_fast.graph.capture import check_eval_mode


def _net(*middle: nn.Module) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), *middle, nn.Conv2d(4, 2, 1))


# (model, which submodule to put in training mode with the root in eval mode, names and words expected)
CASES = {
    "root, InstanceNorm model": (lambda: _net(nn.InstanceNorm2d(4), nn.ReLU()), None,
                                 [("<root>", "may branch on self.training")]),
    "BatchNorm": (lambda: _net(nn.BatchNorm2d(4)), "1", [("1", "BatchNorm2d would normalise with the batch's statistics")]),
    "InstanceNorm with running stats": (lambda: _net(nn.InstanceNorm2d(4, track_running_stats=True)), "1",
                                        [("1", "InstanceNorm2d(track_running_stats=True) would normalise with each "
                                               "instance's statistics")]),
    "Dropout": (lambda: _net(nn.Dropout(0.3)), "1", [("1", "Dropout would zero random activations")]),
    "Dropout2d": (lambda: _net(nn.Dropout2d(0.3)), "1", [("1", "Dropout2d would zero random activations")]),
    "AlphaDropout": (lambda: _net(nn.AlphaDropout(0.3)), "1", [("1", "AlphaDropout would zero random")]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_each_kind_is_named_with_its_reason(case) -> None:
    make, which, expected = CASES[case]
    model = make().eval()
    if which is None:
        model.train()
    else:
        dict(model.named_modules())[which].train()
    with pytest.raises(TrainingModeError) as e:
        check_eval_mode(model)
    assert isinstance(e.value, ValueError)
    assert [name for name, _ in e.value.problems] == [name for name, _ in expected]
    for (_, why), (_, words) in zip(e.value.problems, expected, strict=True):
        assert words in why and words in str(e.value)
    assert str(e.value).endswith("Call model.eval() before unet_fast.optimize(...)")
    if "BatchNorm" not in case:
        assert "BatchNorm" not in str(e.value)  # the old message blamed BatchNorm whatever the model held
    with pytest.raises(TrainingModeError, match="training mode"):  # the engine's entry point says the same
        unet_fast.optimize(model, torch.randn(2, 3, 8, 8), backend="torch")


@pytest.mark.parametrize("layer", [nn.InstanceNorm2d(4), nn.GroupNorm(2, 4), nn.LayerNorm([4, 8, 8]), nn.ReLU()])
def test_modules_whose_result_ignores_the_mode_are_not_refused(layer) -> None:
    model = _net(layer).eval()
    layer.train()
    check_eval_mode(model)  # no error
    x = torch.randn(2, 3, 8, 8)
    fused = unet_fast.optimize(model, x, backend="torch")
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), atol=1e-5, rtol=1e-5)


def test_many_modules_are_grouped_by_reason_and_counted() -> None:
    model = nn.Sequential(*[nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)) for _ in range(7)],
                          nn.Dropout(0.1)).eval()  # fmt: skip
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.Dropout)):
            m.train()
    with pytest.raises(TrainingModeError) as e:
        check_eval_mode(model)
    message = str(e.value)
    assert "0.1, 1.1, 2.1, 3.1, 4.1 ... (7 in all): BatchNorm2d" in message and "7: Dropout" in message
    assert len(e.value.problems) == 8
