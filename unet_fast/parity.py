"""Parity metrics and reports: how far an output is from the reference, in the terms that matter for
segmentation (max abs error, relative L2, argmax agreement, mean IoU of the argmax masks)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class ParityReport:
    shape: tuple[int, ...]
    max_abs: float
    rel_l2: float
    argmax_agreement: float
    mean_iou: float
    worst_index: tuple[int, ...]
    worst_reference: float
    worst_value: float
    nonfinite: int  # NaN/inf in the output where the reference is finite

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return (f"max_abs={self.max_abs:.3g} at {self.worst_index} (ref {self.worst_reference:.6g}, got "
                f"{self.worst_value:.6g}), rel_l2={self.rel_l2:.3g}, argmax agreement={self.argmax_agreement:.5%}, "
                f"mIoU={self.mean_iou:.5f}, non-finite={self.nonfinite}, shape={self.shape}")  # fmt: skip


def class_map(t: Tensor, class_dim: int = 1) -> Tensor:
    """Per-pixel class: integer tensors are class maps already; one channel is thresholded at 0.5
    (a sigmoid output); otherwise argmax over `class_dim`."""
    if not t.is_floating_point():
        return t.long()
    if t.dim() > class_dim and t.shape[class_dim] == 1:
        return (t.squeeze(class_dim) > 0.5).long()
    return t.argmax(dim=class_dim)


def mean_iou(a: Tensor, b: Tensor) -> float:
    """Mean IoU over the classes present in either map (1.0 for two identical maps)."""
    classes = torch.unique(torch.cat([a.flatten(), b.flatten()]))
    ious = []
    for c in classes.tolist():
        ia, ib = a == c, b == c
        union = (ia | ib).sum().item()
        ious.append((ia & ib).sum().item() / union)
    return float(sum(ious) / len(ious)) if ious else 1.0


def describe(value: object) -> str:
    """A model output in words, for errors: "a tensor (2, 3, 8, 8)", "a tuple of 2 tensors", "a dict ['out']"."""
    if isinstance(value, Tensor):
        return f"a tensor {tuple(value.shape)}"
    if isinstance(value, dict):
        return f"a {type(value).__name__} with keys {list(value)}"
    if isinstance(value, (list, tuple)):
        n = sum(isinstance(v, Tensor) for v in value)
        return f"a {type(value).__name__} of {len(value)} ({n} tensor{'s' if n != 1 else ''})"
    return f"a {type(value).__name__}"


def compare(reference: Tensor, out: Tensor, class_dim: int = 1) -> ParityReport:
    """Compare `out` with `reference` (same shape; NCHW outputs have classes on dim 1). Raises TypeError for
    anything but two tensors (a model returning a tuple or dict: compare its outputs one by one) and
    ValueError for different shapes."""
    if not isinstance(reference, Tensor) or not isinstance(out, Tensor):
        raise TypeError(f"compare compares one tensor with one tensor; got {describe(reference)} and "
                        f"{describe(out)}: for a model returning several outputs compare each, e.g. "
                        "compare(ref['out'], out['out'])")  # fmt: skip
    if tuple(reference.shape) != tuple(out.shape):
        raise ValueError(f"shape mismatch: reference {tuple(reference.shape)} vs output {tuple(out.shape)}")
    ref = reference.detach().to("cpu", torch.float64)
    got = out.detach().to("cpu", torch.float64)
    diff = (got - ref).abs()
    nonfinite = int((~torch.isfinite(got) & torch.isfinite(ref)).sum())
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, math.inf), diff)  # NaN is the worst error
    flat = int(diff.flatten().argmax()) if diff.numel() else 0
    idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape)) if diff.numel() else ()
    ref_norm = ref.norm().item()
    err_norm = (got - ref).norm().item()
    rel = err_norm / ref_norm if ref_norm > 0 else (0.0 if err_norm == 0 else math.inf)
    ca, cb = class_map(reference, class_dim), class_map(out, class_dim)
    agree = float((ca == cb).double().mean()) if ca.numel() else 1.0
    return ParityReport(
        shape=tuple(reference.shape),
        max_abs=float(diff.max()) if diff.numel() else 0.0,
        rel_l2=float(rel),
        argmax_agreement=agree,
        mean_iou=mean_iou(ca, cb),
        worst_index=idx,
        worst_reference=float(ref[idx]) if idx else 0.0,
        worst_value=float(got[idx]) if idx else 0.0,
        nonfinite=nonfinite,
    )


def assert_parity(reference: Tensor, out: Tensor, *, max_abs: float | None = None, rel_l2: float | None = None,
                  min_agreement: float | None = None, min_iou: float | None = None, class_dim: int = 1,
                  what: str = "output") -> ParityReport:  # fmt: skip
    """Assert `out` is within the given bounds of `reference`; the AssertionError carries the full report."""
    r = compare(reference, out, class_dim)
    failures = []
    if r.nonfinite:
        failures.append(f"{r.nonfinite} non-finite values where the reference is finite")
    if max_abs is not None and not r.max_abs <= max_abs:
        failures.append(f"max_abs {r.max_abs:.3g} > {max_abs:.3g}")
    if rel_l2 is not None and not r.rel_l2 <= rel_l2:
        failures.append(f"rel_l2 {r.rel_l2:.3g} > {rel_l2:.3g}")
    if min_agreement is not None and not r.argmax_agreement >= min_agreement:
        failures.append(f"argmax agreement {r.argmax_agreement:.5%} < {min_agreement:.5%}")
    if min_iou is not None and not r.mean_iou >= min_iou:
        failures.append(f"mean IoU {r.mean_iou:.5f} < {min_iou:.5f}")
    if failures:
        raise AssertionError(f"{what} differs from the reference: {'; '.join(failures)}\n  {r}")
    return r
