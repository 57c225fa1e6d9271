"""BatchNorm folding math: conv(x, w, b) followed by eval-mode BN == conv(x, w', b')."""

from __future__ import annotations

import torch
from torch import Tensor


def fold_bn(weight: Tensor, bias: Tensor | None, running_mean: Tensor, running_var: Tensor, eps: float,
            gamma: Tensor | None = None, beta: Tensor | None = None, *, out_dim: int = 0) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Fold y = gamma * (conv + b - mean) / sqrt(var + eps) + beta into the conv's weight and bias.

    `out_dim` is the weight's output-channel dimension: 0 for Conv2d (OIHW), 1 for ConvTranspose2d (IOHW).
    Computed in float64 so folding adds no error of its own; returned as float32.
    """
    w = weight.detach().double()
    scale = (running_var.detach().double() + eps).rsqrt()
    if gamma is not None:
        scale = scale * gamma.detach().double()
    shift = -running_mean.detach().double() * scale
    if beta is not None:
        shift = shift + beta.detach().double()
    b = torch.zeros_like(scale) if bias is None else bias.detach().double()
    shape = [1] * w.dim()
    shape[out_dim] = -1
    return (w * scale.reshape(shape)).float(), (b * scale + shift).float()
