"""Shared pieces of the engine tests: the model families, small; parity bounds of the issue."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))

from milesial_unet import MilesialUNet
from smp_like import SmpLikeUnet

from unet_fast.engine import FusedUNet
from unet_fast.models.weights import randomize_bn
from unet_fast.parity import assert_parity

# fp32 bounds of the issue: relative L2 < 1e-5, argmax agreement > 99.9% (random weights, random BN stats)
REL_L2 = 1e-5
AGREEMENT = 0.999

__all__ = ["MilesialUNet", "SmpLikeUnet", "check_parity", "poisoned", "randomize_bn"]


def poisoned(fast: FusedUNet, x: torch.Tensor) -> FusedUNet:
    """NaN-fill the executor's buffers before every run, so an element no step wrote shows up."""
    fast.executor_for(tuple(x.shape)).poison = True
    return fast


def check_parity(model: nn.Module, fast: FusedUNet, x: torch.Tensor, what: str) -> None:
    with torch.no_grad():
        ref = model(x)
        out = poisoned(fast, x)(x)
    assert out.shape == ref.shape and out.dtype == ref.dtype, (out.shape, out.dtype, ref.shape, ref.dtype)
    assert_parity(ref, out, rel_l2=REL_L2, min_agreement=AGREEMENT, what=what)
