"""The reference kernels: kernels/spec.py's PyTorch functions registered as the `torch` backend's
implementation of every step kind, in every float dtype (kernels/registry.py). The torch backend runs them all
(it proves the graph passes independently of any fused kernel); every other backend falls back to them, per
step and with the reason, for a step none of its kernels supports: the reference of last resort."""

from __future__ import annotations

from unet_fast.graph.ir import Concat, Conv, ConvTranspose2x2, Head, Pool
from unet_fast.kernels import registry, spec

_DTYPES = spec.FLOAT_DTYPES
_LABEL = "torch reference"

registry.register(
    registry.Kernel("torch.conv2d", Conv, "torch", _DTYPES, spec.conv2d, pack=spec.pack_conv_weight,
                    algorithm="PyTorch F.conv2d (spec.conv2d)", label=_LABEL),
    registry.Kernel("torch.conv_transpose2x2", ConvTranspose2x2, "torch", _DTYPES, spec.conv_transpose2x2,
                    pack=spec.pack_conv_transpose_weight, algorithm="PyTorch F.conv_transpose2d", label=_LABEL),
    registry.Kernel("torch.upsample_concat", Concat, "torch", _DTYPES, spec.upsample_concat,
                    algorithm="PyTorch F.interpolate + cat", label=_LABEL),
    registry.Kernel("torch.maxpool2x2", Pool, "torch", _DTYPES, spec.maxpool2x2, algorithm="PyTorch F.max_pool2d",
                    label=_LABEL),
    registry.Kernel("torch.head", Head, "torch", _DTYPES, spec.head, pack=spec.pack_head_weight,
                    algorithm="PyTorch 1x1 matmul + per-pixel op", label=_LABEL),
)  # fmt: skip
