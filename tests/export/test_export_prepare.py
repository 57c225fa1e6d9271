"""BatchNorm folding at module level (Sequential pairs and the torch.fx general case) and the export's
bad-input errors."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from export_helpers import small_unet
from torch import nn

from unet_fast.bench.workloads import randomize_bn
from unet_fast.export.prepare import UNetExportForm, fold_batchnorm


class Loose(nn.Module):
    """Conv and BN as attributes (not in a Sequential): only the fx pass can pair them. `bn2` follows a
    ReLU, so it cannot fold and must be reported."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(5)
        self.up = nn.ConvTranspose2d(5, 4, 2, stride=2)
        self.bn_up = nn.BatchNorm2d(4)
        self.bn2 = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(F.relu(self.bn_up(self.up(self.bn(self.conv(x))))))


def test_fold_fx_general_case() -> None:
    torch.manual_seed(0)
    model = randomize_bn(Loose())
    folded, report = fold_batchnorm(model)
    assert sorted(report.folded) == [("conv", "bn"), ("up", "bn_up")]
    assert report.left == ["bn2"]
    x = torch.randn(2, 3, 9, 7)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)
    assert isinstance(model.bn, nn.BatchNorm2d), "the caller's model must not change"


def test_fold_sequentials_in_unet_and_export_form_at_odd_sizes() -> None:
    model = small_unet(upsample="bilinear", depth=3, base_channels=4)
    folded, report = fold_batchnorm(model)
    assert len(report.folded) == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert not report.left and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    form = UNetExportForm(folded).eval()
    for shape in [(1, 3, 32, 32), (2, 3, 41, 27)]:
        x = torch.randn(shape)
        with torch.no_grad():
            torch.testing.assert_close(form(x), model(x), atol=1e-5, rtol=1e-5)


def test_training_model_is_folded_on_an_eval_copy() -> None:
    model = small_unet().train()
    _, report = fold_batchnorm(model)  # export means inference: the copy is put in eval mode first
    assert model.training
    assert report.folded and not report.left
