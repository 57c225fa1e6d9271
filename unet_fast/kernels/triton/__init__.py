"""Triton kernels, one op per file: reference (from kernels/spec.py) -> kernel -> launcher.

This module is the backend interface of kernels/spec.py (the engine's executor calls these names).
Importing it imports triton; nothing else in unet_fast imports this at package import time.
Each launcher also takes `config=` (explicit block sizes, no autotuning: tests and the interpreter) and
the GEMM ops `allow_tf32=` (fp32 inputs only; off by default, so fp32 stays fp32-exact).
"""

from unet_fast.kernels.triton.common import SUPPORTED_DTYPES
from unet_fast.kernels.triton.conv2d import conv2d
from unet_fast.kernels.triton.conv2d import pack_weight as pack_conv_weight
from unet_fast.kernels.triton.conv_transpose2x2 import conv_transpose2x2
from unet_fast.kernels.triton.conv_transpose2x2 import pack_weight as pack_conv_transpose_weight
from unet_fast.kernels.triton.head import head
from unet_fast.kernels.triton.head import pack_weight as pack_head_weight
from unet_fast.kernels.triton.maxpool2x2 import maxpool2x2
from unet_fast.kernels.triton.upsample_concat import upsample_concat

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
