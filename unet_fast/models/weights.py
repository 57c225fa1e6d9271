"""Weight randomisers for tests and benchmarks: lively weights and random BatchNorm statistics (never
PyTorch's defaults), so parity checks see what a trained model would make of a wrong coordinate transform,
a wrong crop or an unfolded BN. Here, beside the reference models, so every layer (tests, export, bench) can
use them without depending on the benchmark package."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["lively_weights", "randomize_bn"]


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm random running statistics and affine parameters, then set eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
                if m.affine:
                    m.weight.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
                    m.bias.copy_(torch.randn(c, generator=g) * 0.1)
    return model.eval()


def lively_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights that keep activations alive through depth, then random BN statistics.

    With PyTorch's default conv init (variance ~1/(3 fan_in)) each layer shrinks its input's variance and
    eval-mode BN with running_var ~1 does not restore it, so after a few layers the maps are nearly
    constant (the BN shifts dominate) and *any* resize mode gives the same output: an end-to-end test
    would then not see a wrong coordinate transform. He-normal weights keep the variance, so it does
    (tests/export/test_export_onnx.py::test_upsample_semantics_are_visible_end_to_end)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                fan_in = m.weight[0].numel() if isinstance(m, nn.Conv2d) else m.weight.shape[0] * 4
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return randomize_bn(model, seed)
