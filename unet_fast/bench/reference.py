"""The ground truth every benchmark row is compared with: the fp32 PyTorch eager model, NCHW, on CPU."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from unet_fast.model_guard import eval_model

REFERENCE_LABEL = "pytorch eager, fp32, NCHW, on CPU"


def reference_output(model: nn.Module, x: Tensor) -> Tensor:
    """fp32 CPU forward pass of `model` in eval mode (an eval copy when any part of it is training: the
    caller's model stays exactly as it is)."""
    if next(model.parameters()).device.type != "cpu" or x.device.type != "cpu":
        raise ValueError("the reference runs on CPU: pass the model and the input on CPU")
    model = eval_model(model)  # a training-mode forward would use batch statistics and update the BNs
    with torch.inference_mode():
        out = model(x.float())
    if not isinstance(out, Tensor):
        from unet_fast.parity import describe

        raise ValueError(f"the model returns {describe(out)}; the bench compares one output tensor per row: "
                         "benchmark a wrapper module whose forward returns the output you want")  # fmt: skip
    return out.float()
