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
    # Folds tried and dropped because the folded copy did not compute what the model computes on the
    # example input (one line each: which fold, and the difference or error seen).
    rejected: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"folded": len(self.folded), "left": list(self.left), "rejected": list(self.rejected)}


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


# A folded copy may differ from the model by rounding only (the fold is computed in float64 and stored in
# the model's dtype): relative L2 ~1e-7 in fp32. Anything above these limits is a different computation.
FOLD_REL_L2 = {torch.float32: 1e-5, torch.float64: 1e-10}
FOLD_REL_L2_OTHER = 1e-2  # fp16 / bf16 models


def _outputs(out: object) -> list[Tensor]:
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _outputs(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in _outputs(v)]
    return []


def _difference(candidate: nn.Module, reference: object, example: Tensor) -> str:
    """'' when `candidate(example)` matches `reference` (the model's output) up to rounding, else why not."""
    try:
        with torch.no_grad():
            got = candidate(example)
    except Exception as e:  # e.g. a channel mismatch: the trace dropped a branch that feeds a conv
        return f"raises {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    want, have = _outputs(reference), _outputs(got)
    if len(want) != len(have) or any(a.shape != b.shape for a, b in zip(want, have, strict=True)):
        return (f"returns shapes {[tuple(t.shape) for t in have]}, the model "
                f"{[tuple(t.shape) for t in want]}")  # fmt: skip
    for a, b in zip(want, have, strict=True):
        if not a.is_floating_point():
            if not torch.equal(a, b):
                return "returns different integer values"
            continue
        ref, out = a.detach().double(), b.detach().double()
        if not torch.isfinite(out).all() and torch.isfinite(ref).all():
            return "returns NaN/inf where the model does not"
        norm = ref.norm().item()
        rel = (out - ref).norm().item() / norm if norm > 0 else (out - ref).norm().item()
        if not rel <= FOLD_REL_L2.get(a.dtype, FOLD_REL_L2_OTHER):
            return f"relative L2 difference {rel:.3g} from the model"
    return ""


def _running_stat_norms_as_batch_norms(model: nn.Module) -> None:
    """Replace, in place, each eval-mode InstanceNorm2d that tracks running statistics by the BatchNorm2d it
    computes: with `track_running_stats=True` it normalises with the running mean and variance, a fixed
    per-channel affine map, exactly eval-mode BatchNorm. Why: torch.onnx's exporter refuses that
    InstanceNorm for a dynamic batch ("instance_norm training for unknown batch size"); a BatchNorm2d
    exports, and folds into the conv before it."""
    for name, child in list(model.named_children()):
        if (isinstance(child, nn.InstanceNorm2d) and child.track_running_stats and not child.training
                and child.running_mean is not None and child.running_var is not None):  # fmt: skip
            bn = nn.BatchNorm2d(child.num_features, eps=child.eps, affine=child.affine,
                                device=child.running_mean.device, dtype=child.running_mean.dtype).eval()  # fmt: skip
            with torch.no_grad():
                bn.running_mean.copy_(child.running_mean)
                bn.running_var.copy_(child.running_var)
                if child.affine:
                    bn.weight.copy_(child.weight)
                    bn.bias.copy_(child.bias)
            setattr(model, name, bn)
        else:
            _running_stat_norms_as_batch_norms(child)


def _fold_copy(model: nn.Module, use_fx: bool) -> tuple[nn.Module, FoldReport]:
    folded = copy.deepcopy(model).eval()
    report = FoldReport()
    _fold_sequentials(folded, report)
    if use_fx:
        folded = _fold_fx(folded, report)
    return folded, report


def fold_batchnorm(model: nn.Module, example_input: Tensor | None = None,
                   reference_output: Tensor | None = None) -> tuple[nn.Module, FoldReport]:  # fmt: skip
    """A deep copy of `model` in eval mode with every foldable Conv2d/ConvTranspose2d -> BatchNorm2d pair
    folded (math: unet_fast.graph.bn_fold.fold_bn, in float64); an InstanceNorm2d with running statistics
    counts as the BatchNorm2d it computes in eval mode. BatchNorms that could not be folded are
    named in the report; they still export correctly (as BatchNormalization nodes).

    Pairs inside an nn.Sequential are found structurally; other pairs in a torch.fx symbolic trace. A
    symbolic trace can compute something else than the model (Python checks such as `isinstance(x, Tensor)`
    or `torch.jit.isinstance` see a Proxy there, so a branch is dropped), so with `example_input`
    (N, C, H, W) the folded copy is run against the model: a copy that raises or differs by more than
    rounding is dropped for one with Sequential folds only, then for the unfolded model, and the report's
    `rejected` says why. Without `example_input` nothing is verified (to_onnx always passes one).
    `reference_output`: the model's output on `example_input` when the caller has it already (to_onnx
    does), so the model is not run a second time. The caller's model is not changed."""
    original = copy.deepcopy(model).eval()
    _running_stat_norms_as_batch_norms(original)
    if example_input is None:
        folded, report = _fold_copy(original, use_fx=True)
        report.left = [n for n, m in folded.named_modules() if isinstance(m, nn.BatchNorm2d)]
        return folded, report
    reference: object = reference_output  # the model's output, computed once and only when a fold is checked
    rejected: list[str] = []
    for what, use_fx in (("Sequential and torch.fx folds", True), ("Sequential folds", False)):
        folded, report = _fold_copy(original, use_fx)
        if not report.folded:
            continue
        if reference is None:
            with torch.no_grad():
                reference = original(example_input)
        why = _difference(folded, reference, example_input)
        if not why:
            report.rejected = rejected
            report.left = [n for n, m in folded.named_modules() if isinstance(m, nn.BatchNorm2d)]
            return folded, report
        rejected.append(f"{what} ({len(report.folded)} BatchNorms): the folded copy {why}")
    report = FoldReport(rejected=rejected)
    report.left = [n for n, m in original.named_modules() if isinstance(m, nn.BatchNorm2d)]
    return original, report


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


def export_form(model: nn.Module, example_input: Tensor | None = None,
                reference_output: Tensor | None = None) -> tuple[nn.Module, FoldReport]:  # fmt: skip
    """BN-folded copy of `model` in the form that traces correctly at every size (folds verified on
    `example_input` when given, against `reference_output` if given: see fold_batchnorm)."""
    folded, report = fold_batchnorm(model, example_input, reference_output)
    if isinstance(folded, UNet):
        return UNetExportForm(folded).eval(), report
    return folded, report
