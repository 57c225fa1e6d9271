"""The module boundary's memory layout: the engine computes NHWC; the caller gets what the model returns.

A contiguous (NCHW) input gives a contiguous output, as eager convolutions do; for a channels_last input the
model's own output format is found once by running it on fake tensors (shapes and strides only, no compute)
and then reused. A different layout is an explicit option (optimize(output_memory_format=...)).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

MEMORY_FORMATS = ("model", "contiguous", "channels_last")


def input_format(x: Tensor) -> str:
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return "channels_last"
    return "contiguous"


def eager_output_format(model: nn.Module, shape: tuple[int, ...], fmt: str, mode: str = "model") -> str:
    """The memory format eager PyTorch gives for an input of `shape` in format `fmt`: for output "model" the
    model's own output (run on fake tensors: no compute); for "logits" the last convolution's (convolutions
    keep the input's format); for "probabilities" a softmax over channels of such logits."""
    if fmt == "contiguous":
        return "contiguous"
    if mode == "logits":
        return fmt
    if mode == "probabilities":
        probe = torch.softmax(torch.zeros(1, 2, 2, 2).contiguous(memory_format=torch.channels_last), dim=1)
        return "contiguous" if probe.is_contiguous() else "channels_last"
    try:
        from torch._subclasses.fake_tensor import FakeTensorMode

        with torch.no_grad(), FakeTensorMode(allow_non_fake_inputs=True):
            x = torch.empty(shape).contiguous(memory_format=torch.channels_last)
            out = model(x)
        if isinstance(out, Tensor) and out.dim() == 4 and not out.is_contiguous():
            return "channels_last" if out.is_contiguous(memory_format=torch.channels_last) else "contiguous"
        return "contiguous"
    except Exception:
        return fmt


def to_format(out_nhwc: Tensor, fmt: str) -> Tensor:
    """NHWC [N, H, W, C] -> an NCHW-shaped tensor in `fmt` (a view for channels_last, a copy for contiguous)."""
    out = out_nhwc.permute(0, 3, 1, 2)
    return out.contiguous() if fmt == "contiguous" else out
