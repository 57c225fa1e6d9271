"""The Plan IR's value types: what a step says about how it reads and what it computes, as plain values.

A leaf module (it imports nothing of unet_fast): the IR (graph/ir.py, graph/lower.py) and the kernels
(kernels/spec.py and every kernel module) import it, so neither has to import the other to agree on
what a resample, an activation or a head op is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Activation = Literal["none", "relu", "leaky_relu", "silu"]
# Index order is the C++ enum unet_fast::Act (csrc/include/unet_fast/activation.h).
ACTIVATIONS: tuple[str, ...] = ("none", "relu", "leaky_relu", "silu")
HeadOp = Literal["softmax", "sigmoid", "argmax", "logits"]
# Index order is the C++ HeadOp (csrc/include/unet_fast/pixel_ops.h) and the CUDA head's.
HEAD_OPS: tuple[str, ...] = ("logits", "softmax", "sigmoid", "argmax")
ResampleMode = Literal["nearest", "bilinear"]


@dataclass(frozen=True)
class Resample:
    """Resampling applied while reading: `size` is the resampled (H, W). `nearest` is F.interpolate's
    legacy 'nearest' (src = floor(dst * in / out)); bilinear honours align_corners like F.interpolate
    called with an explicit output size (identical to scale_factor=2 for an exact 2x)."""

    mode: ResampleMode
    size: tuple[int, int]
    align_corners: bool = False


__all__ = ["ACTIVATIONS", "HEAD_OPS", "Activation", "HeadOp", "Resample", "ResampleMode"]
