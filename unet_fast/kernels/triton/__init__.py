"""Triton kernels, one op per file: reference (from kernels/spec.py) -> kernel -> launcher.

This module exposes the spec.py op functions and registers them as the `triton` backend's kernels
(kernels/registry.py: the engine's executor runs what the registry chose per step).
Importing it imports triton; nothing else in unet_fast imports this at package import time.
Each launcher also takes `config=` (explicit block sizes, no autotuning: tests and the interpreter) and
the GEMM ops `allow_tf32=` (fp32 inputs only; off by default, so fp32 stays fp32-exact).
"""

import torch

from unet_fast.graph.ir import Concat, Conv, ConvTranspose2x2, Head, Pool, Step
from unet_fast.kernels import registry
from unet_fast.kernels.triton.common import SUPPORTED_DTYPES
from unet_fast.kernels.triton.conv2d import MAX_INPUTS, conv2d
from unet_fast.kernels.triton.conv2d import pack_weight as pack_conv_weight
from unet_fast.kernels.triton.conv_transpose2x2 import conv_transpose2x2
from unet_fast.kernels.triton.conv_transpose2x2 import pack_weight as pack_conv_transpose_weight
from unet_fast.kernels.triton.head import MAX_CLASSES, head
from unet_fast.kernels.triton.head import pack_weight as pack_head_weight
from unet_fast.kernels.triton.maxpool2x2 import maxpool2x2
from unet_fast.kernels.triton.upsample_concat import upsample_concat


def _conv_supports(step: Step, dtype: torch.dtype) -> str | None:
    assert isinstance(step, Conv)
    if len(step.inputs) > MAX_INPUTS:
        return f"the Triton conv reads at most {MAX_INPUTS} inputs of a virtual concat, this one {len(step.inputs)}"
    return None


def _head_supports(step: Step, dtype: torch.dtype) -> str | None:
    assert isinstance(step, Head)
    if step.weight.shape[0] > MAX_CLASSES:
        return f"the Triton head handles at most {MAX_CLASSES} classes, this one {step.weight.shape[0]}"
    return None


registry.register(
    registry.Kernel("triton.conv2d", Conv, "triton", SUPPORTED_DTYPES, conv2d, _conv_supports, pack_conv_weight,
                    algorithm="Triton implicit GEMM conv (views and epilogue fused)"),
    registry.Kernel("triton.conv_transpose2x2", ConvTranspose2x2, "triton", SUPPORTED_DTYPES, conv_transpose2x2,
                    pack=pack_conv_transpose_weight, algorithm="Triton transposed conv"),
    registry.Kernel("triton.upsample_concat", Concat, "triton", SUPPORTED_DTYPES, upsample_concat,
                    algorithm="Triton concat / resample gather"),
    registry.Kernel("triton.maxpool2x2", Pool, "triton", SUPPORTED_DTYPES, maxpool2x2, algorithm="Triton max-pool"),
    registry.Kernel("triton.head", Head, "triton", SUPPORTED_DTYPES, head, _head_supports, pack_head_weight,
                    algorithm="Triton head"),
)  # fmt: skip

__all__ = [
    "SUPPORTED_DTYPES",
    "conv2d",
    "conv_transpose2x2",
    "head",
    "maxpool2x2",
    "pack_conv_transpose_weight",
    "pack_conv_weight",
    "pack_head_weight",
    "upsample_concat",
]
