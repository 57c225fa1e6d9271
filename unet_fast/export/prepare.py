"""Make a model ready for export: BatchNorm folded into the convolutions, a forward that traces into a
graph valid at every input size, and an optional head that emits the class map.

Nothing here mutates the caller's model: every function works on a deep copy.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from unet_fast.graph.bn_fold import fold_bn
from unet_fast.models.unet import UNet

_CONVS = (nn.Conv2d, nn.ConvTranspose2d)


@dataclass
class FoldReport:
    """What BatchNorm folding did: module names folded (conv <- bn) and BatchNorms left as they were."""

    folded: list[tuple[str, str]] = field(default_factory=list)
    left: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"folded": len(self.folded), "left": list(self.left)}


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    if not isinstance(conv, _CONVS) or not isinstance(bn, nn.BatchNorm2d):
        return False
    if bn.training or bn.running_mean is None or bn.running_var is None:
        return False  # batch statistics, not a fixed affine map: nothing to fold
    if isinstance(conv, nn.ConvTranspose2d) and conv.groups != 1:
        return False  # IOHW with groups interleaves output channels; rare in U-Nets, left to the exporter
    return conv.out_channels == bn.num_features


def _folded_conv(conv: nn.Conv2d | nn.ConvTranspose2d, bn: nn.BatchNorm2d) -> nn.Module:
    out_dim = 1 if isinstance(conv, nn.ConvTranspose2d) else 0
    w, b = fold_bn(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias,
                   out_dim=out_dim)  # fmt: skip
    new = copy.deepcopy(conv)
    new.weight = nn.Parameter(w.to(conv.weight.dtype), requires_grad=False)
    new.bias = nn.Parameter(b.to(conv.weight.dtype), requires_grad=False)
    return new


def _fold_sequentials(model: nn.Module, report: FoldReport) -> None:
    """Conv -> BatchNorm2d neighbours inside an nn.Sequential run in that order by construction."""
    for name, module in model.named_modules():
        if not isinstance(module, nn.Sequential):
            continue
        keys = list(module._modules)
        for a, b in itertools.pairwise(keys):
            conv, bn = module._modules[a], module._modules[b]
            if conv is not None and bn is not None and _foldable(conv, bn):
                module._modules[a] = _folded_conv(conv, bn)
                module._modules[b] = nn.Identity()
                prefix = f"{name}." if name else ""
                report.folded.append((prefix + a, prefix + b))


def _has_bn(module: nn.Module) -> bool:
    return any(isinstance(m, nn.BatchNorm2d) for m in module.modules())


def _fold_fx(model: nn.Module, report: FoldReport, prefix: str = "") -> nn.Module:
    """General case: a conv whose only user is a BatchNorm, found in a torch.fx trace. A module whose forward
    branches on shapes cannot be traced symbolically; then each child is tried on its own (a ResNet block
    traces where the whole network does not). BatchNorms found nowhere foldable are left (and reported)."""
    if isinstance(model, nn.BatchNorm2d) or not _has_bn(model):
        return model
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception:
        for name, child in list(model.named_children()):
            new = _fold_fx(child, report, f"{prefix}{name}.")
            if new is not child:
                setattr(model, name, new)
        return model
    modules = dict(gm.named_modules())
    changed = False
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        src = node.args[0] if node.args else None
        if not isinstance(src, torch.fx.Node) or src.op != "call_module" or len(src.users) != 1:
            continue
        conv, bn = modules[src.target], modules[node.target]
        if not _foldable(conv, bn):
            continue
        parent, _, leaf = src.target.rpartition(".")
        setattr(gm.get_submodule(parent) if parent else gm, leaf, _folded_conv(conv, bn))
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
        report.folded.append((prefix + src.target, prefix + node.target))
        changed = True
    if not changed:
        return model
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, FoldReport]:
    """A deep copy of `model` in eval mode with every foldable Conv2d/ConvTranspose2d -> BatchNorm2d pair
    folded (math: unet_fast.graph.bn_fold.fold_bn, in float64). BatchNorms that could not be folded are
    named in the report; they still export correctly (as BatchNormalization nodes)."""
    model = copy.deepcopy(model).eval()
    report = FoldReport()
    _fold_sequentials(model, report)
    model = _fold_fx(model, report)
    report.left = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    return model, report


class UNetExportForm(nn.Module):
    """Our UNet traced into one graph that is right at *every* input size.

    UNet.forward pads the upsampled path only `if` pooling floored an odd size (a Python branch that
    torch.onnx's tracer bakes in at the example's size) and validates the size in Python. This form skips
    the Python checks and runs `run_layers(trace_safe=True)`: the pad is always emitted with amounts
    computed from the traced shapes, and the valid-padding crop is a shape-driven slice."""

    def __init__(self, unet: UNet) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x: Tensor) -> Tensor:
        return self.unet.run_layers(x, trace_safe=True)


class ClassMapHead(nn.Module):
    """Wraps a segmentation model so that it returns the per-pixel class (N, H, W) as int32: argmax over
    channels, or for a one-channel output `score > threshold` (0.5 after a sigmoid, 0 on logits)."""

    def __init__(self, model: nn.Module, threshold: float | None) -> None:
        super().__init__()
        self.model = model
        self.threshold = threshold

    def forward(self, x: Tensor) -> Tensor:
        y = self.model(x)
        if y.shape[1] == 1:
            if self.threshold is None:
                raise ValueError(
                    "the model has one output channel: give class_map_threshold (0.5 after a sigmoid, 0 on logits)"
                )
            return (y[:, 0] > self.threshold).to(torch.int32)
        return torch.argmax(y, dim=1).to(torch.int32)


def default_threshold(model: nn.Module) -> float | None:
    """The one-channel decision threshold implied by our UNet's head; None where the model does not say."""
    if isinstance(model, UNet):
        return 0.5 if model.config.head in ("sigmoid", "softmax") else 0.0
    return None


def export_form(model: nn.Module) -> tuple[nn.Module, FoldReport]:
    """BN-folded copy of `model` in the form that traces correctly at every size."""
    folded, report = fold_batchnorm(model)
    if isinstance(folded, UNet):
        return UNetExportForm(folded).eval(), report
    return folded, report
