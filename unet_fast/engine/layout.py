"""The module boundary's memory layout: the engine computes NHWC; the caller gets what the model returns.

A contiguous (NCHW) input gives a contiguous output, as eager convolutions do; for a channels_last input the
model's own output format is found once by running it on fake tensors (shapes and strides only, no compute)
and then reused. A different layout is an explicit option (optimize(output_memory_format=...)).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from unet_fast.graph.quiet import quiet_torch_logs

MEMORY_FORMATS = ("model", "contiguous", "channels_last")


def input_format(x: Tensor) -> str:
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return "channels_last"
    return "contiguous"


def eager_output_formats(model: nn.Module, shape: tuple[int, ...], fmt: str, mode: str = "model") -> list[str | None]:
    """Per leaf of the model's return value (pytree order: one entry for a bare tensor), the memory format
    eager PyTorch gives for an input of `shape` in format `fmt` (None for a leaf that is not a 4-D tensor):
    for output "model" the model's own outputs (run on fake tensors: no compute); for "logits" the last
    convolution's (convolutions keep the input's format); for "probabilities" a softmax over channels of
    such logits. Where the model cannot be run on fake tensors, every leaf gets `fmt`."""
    from torch.utils import _pytree as pytree

    if fmt == "contiguous":
        return ["contiguous"]
    try:
        from torch._subclasses.fake_tensor import FakeTensorMode

        with quiet_torch_logs(), torch.no_grad(), FakeTensorMode(allow_non_fake_inputs=True):
            x = torch.empty(shape).contiguous(memory_format=torch.channels_last)
            leaves = pytree.tree_leaves(model(x))
    except Exception:
        return [fmt]
    if mode == "logits":
        return [fmt] * len(leaves)
    if mode == "probabilities":
        probe = torch.softmax(torch.zeros(1, 2, 2, 2).contiguous(memory_format=torch.channels_last), dim=1)
        return ["contiguous" if probe.is_contiguous() else "channels_last"] * len(leaves)
    return [_format_of(t) for t in leaves]


def _format_of(out: object) -> str | None:
    if not isinstance(out, Tensor) or out.dim() != 4:
        return None
    if not out.is_contiguous() and out.is_contiguous(memory_format=torch.channels_last):
        return "channels_last"
    return "contiguous"


def to_format(out_nhwc: Tensor, fmt: str) -> Tensor:
    """NHWC [N, H, W, C] -> an NCHW-shaped tensor in `fmt` (a view for channels_last, a copy for contiguous)."""
    out = out_nhwc.permute(0, 3, 1, 2)
    return out.contiguous() if fmt == "contiguous" else out
