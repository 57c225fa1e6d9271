"""In-memory inference by the path that fits: the whole image in one call, exact halo tiles, or blended windows.

- **whole**: one model call on the whole image: the model's own answer. Chosen when the call's activations
  fit the memory budget (estimated from the captured graph at that size: the peak of live feature maps).
- **exact tiles** (`exact_tiled_inference`): crops with a halo that covers the contaminated margin, aligned to
  the model's total stride (`halo.TilingAnalysis`); each output pixel equals the whole-image call's up to
  floating-point rounding. For models whose ops allow it, when the whole image does not fit.
- **blended** (`sliding_window.sliding_window_inference`): Gaussian-weighted overlapping windows (nnU-Net /
  MONAI); an approximation near every window border. For models that are not exact under tiling
  (InstanceNorm, align_corners=True, global pooling...), when the whole image does not fit, and on request.

`choose_strategy` names the path and why; `compare_outputs` measures the difference between two outputs
(relative L2, max abs, class-map agreement away from ties), which is how a blended run's difference to
whole-image inference is stated.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from unet_fast.graph.opgraph import OpGraph
from unet_fast.inference.halo import NotExact, TilingAnalysis, TilingGeometry

Predictor = Callable[[Tensor], Tensor]
Mode = Literal["whole", "exact", "blended"]
MODES = ("auto", "whole", "exact", "blended")
DEFAULT_MEMORY_BUDGET = 2 << 30  # bytes of activations one whole-image call may take (2 GiB)

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "MODES",
    "Comparison",
    "Strategy",
    "choose_strategy",
    "compare_outputs",
    "exact_tiled_inference",
    "peak_activation_bytes",
]


def peak_activation_bytes(g: OpGraph, element_bytes: int = 4) -> int:
    """The largest sum of feature maps alive at once when `g` runs node by node in order (a value lives from
    the node that makes it to its last reader; the input and the output count). A model-level estimate of a
    call's activation memory, not the engine's arena (which reuses buffers and may be smaller)."""
    last_use: dict[int, int] = {}
    for i, n in enumerate(g.nodes):
        for src in n.inputs:
            last_use[id(src)] = i
    last_use[id(g.output)] = len(g.nodes)

    def size(n) -> int:
        if n.shape is None:
            src = n.inputs[0].shape if n.inputs and n.inputs[0].shape is not None else None
            return 0 if src is None else math.prod(int(s) for s in src) // max(1, int(src[1]))
        return math.prod(int(s) for s in n.shape)

    live: dict[int, int] = {}
    peak = 0
    for i, n in enumerate(g.nodes):
        live[id(n)] = size(n)
        peak = max(peak, sum(live.values()))
        for key in [k for k, last in last_use.items() if last == i and k in live]:
            del live[key]
    return peak * element_bytes


@dataclass(frozen=True)
class Strategy:
    """The path one image takes: `mode` (whole | exact | blended), `reason` (one line, for the output
    metadata), `geometry` for exact tiles, and the estimated activation bytes of a whole-image call."""

    mode: Mode
    reason: str
    geometry: TilingGeometry | None = None
    whole_bytes: int | None = None

    def describe(self) -> str:
        return f"{self.mode}: {self.reason}"


def choose_strategy(analysis: TilingAnalysis | None, height: int, width: int, *, mode: str = "auto",
                    memory_budget: int = DEFAULT_MEMORY_BUDGET, core: int = 512, batch: int = 1,
                    element_bytes: int = 4) -> Strategy:  # fmt: skip
    """Pick the path for an image of height x width input pixels.

    mode="auto": whole when the whole-image call's activations (batch 1) fit `memory_budget` bytes, else
    exact tiles of `core` x `core` output pixels when the model is exact under tiling, else blended windows.
    mode="whole" | "exact" | "blended" forces one: "exact" raises NotExact (with the reason) for a model or size
    that is not exact. `analysis` None (no capture available): whole when asked, else blended."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "blended":
        return Strategy("blended", "blended windows (asked for)")
    if analysis is None:
        if mode == "exact":
            raise NotExact("no capture of the model to derive its tiling from")
        if mode == "whole":
            return Strategy("whole", "the whole image in one call (asked for)")
        return Strategy("blended", "blended windows (no capture of the model to derive exact tiles from)")
    whole_bytes: int | None = None
    why_not_whole = ""
    try:
        whole_bytes = batch * peak_activation_bytes(analysis.graph_at((1, analysis.in_channels, height, width)),
                                                    element_bytes)  # fmt: skip
    except NotExact as e:
        why_not_whole = str(e)
    except Exception as e:  # the model cannot take this size as a whole
        why_not_whole = f"the model cannot take {height}x{width} whole: {e}"
    if mode == "whole":
        if why_not_whole and whole_bytes is None and "cannot take" in why_not_whole:
            raise ValueError(why_not_whole)
        return Strategy("whole", "the whole image in one call (asked for)", None, whole_bytes)
    fits = whole_bytes is not None and whole_bytes <= memory_budget
    if mode == "auto" and fits:
        return Strategy("whole", f"the whole image in one call ({_mib(whole_bytes)} of activations, budget "
                        f"{_mib(memory_budget)})", None, whole_bytes)  # fmt: skip
    geo = analysis.geometry(height, width, core)
    over = (f"the whole image needs {_mib(whole_bytes)} of activations, over the budget of {_mib(memory_budget)}"
            if whole_bytes is not None else why_not_whole)  # fmt: skip
    if geo.exact:
        why = "asked for" if mode == "exact" else over
        return Strategy("exact", f"{geo.describe()} ({why})", geo, whole_bytes)
    if mode == "exact":
        raise NotExact(geo.reason)
    return Strategy(
        "blended", f"blended windows ({over}; exact tiles refused: {geo.reason})", geo, whole_bytes
    )


def _mib(n: int | None) -> str:
    return "?" if n is None else f"{n / (1 << 20):.0f} MiB"


@torch.no_grad()
def exact_tiled_inference(image: Tensor, predictor: Predictor, geometry: TilingGeometry, batch_size: int = 4,
                          fixed_batch: bool = True,
                          progress: Callable[[int, int], None] | None = None) -> Tensor:  # fmt: skip
    """Run `predictor` on the halo crops of `geometry` and stitch their cores: [N, C, H, W] -> the model's
    output for the whole image ([N, K, H', W'], or [N, H', W'] for a class map), in `predictor`'s dtype.

    Every crop has the same shape (the geometry's crop shape), so a shape-specialised engine sees one shape;
    `fixed_batch` pads the last batch of crops with zeros to `batch_size`. `progress(done, total)` after each
    batch. Raises ValueError for a geometry that is not exact or does not match the image."""
    if image.dim() != 4:
        raise ValueError(f"exact_tiled_inference expects [N, C, H, W], got shape {tuple(image.shape)}")
    if not geometry.exact or geometry.grid is None:
        raise ValueError(f"the geometry is not exact: {geometry.reason}")
    if tuple(image.shape[2:]) != tuple(geometry.image):
        raise ValueError(f"the geometry is for {geometry.image}, the image is {tuple(image.shape[2:])}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    boxes = geometry.grid.boxes()
    jobs = [(b, box) for b in range(image.shape[0]) for box in boxes]
    total = math.ceil(len(jobs) / batch_size)
    out: Tensor | None = None
    oh, ow = geometry.out_size
    for k in range(0, len(jobs), batch_size):
        chunk = jobs[k : k + batch_size]
        crops = torch.stack([image[b, :, t.y : t.y + t.h, t.x : t.x + t.w] for b, t in chunk])
        if fixed_batch and len(chunk) < batch_size:
            crops = torch.cat([crops, crops.new_zeros((batch_size - len(chunk), *crops.shape[1:]))])
        pred = predictor(crops)
        if out is None:  # poisoned (NaN / -1): a pixel no tile wrote cannot pass for a result
            lead = (pred.shape[1],) if pred.dim() == 4 else ()
            fill = float("nan") if pred.is_floating_point() else -1
            out = pred.new_full((image.shape[0], *lead, oh, ow), fill)
        for (b, t), p in zip(chunk, pred, strict=False):
            oy0, oy1, ox0, ox1 = t.out
            out[b, ..., oy0:oy1, ox0:ox1] = p[..., oy0 - t.y : oy1 - t.y, ox0 - t.x : ox1 - t.x]
        if progress is not None:
            progress(k // batch_size + 1, total)
    assert out is not None
    return out


@dataclass(frozen=True)
class Comparison:
    """How far `test` is from `reference` (both [N, K, H, W] probabilities or logits, same shape)."""

    rel_l2: float
    max_abs: float
    class_agreement: float  # fraction of pixels with the same argmax
    agreement_away_from_ties: float  # same, over pixels whose top-2 margin in the reference exceeds `tie`
    tie: float
    pixels: int

    def describe(self) -> str:
        return (f"rel-L2 {self.rel_l2:.2e}, max abs {self.max_abs:.2e}, class map {100 * self.class_agreement:.4f}% "
                f"equal ({100 * self.agreement_away_from_ties:.4f}% away from ties < {self.tie:g})")  # fmt: skip


def compare_outputs(test: Tensor, reference: Tensor, tie: float = 1e-4) -> Comparison:
    """Relative L2, max abs difference and class-map agreement of two model outputs of the same shape. A
    "tie" is a pixel whose two largest reference values differ by less than `tie` (argmax there is decided by
    rounding, not by the model)."""
    if test.shape != reference.shape:
        raise ValueError(f"shapes differ: {tuple(test.shape)} vs {tuple(reference.shape)}")
    t, r = test.double(), reference.double()
    rel = float((t - r).norm() / r.norm().clamp_min(1e-30))
    mx = float((t - r).abs().max())
    if r.dim() == 4 and r.shape[1] > 1:
        same = t.argmax(1) == r.argmax(1)
        top2 = r.topk(2, dim=1).values
        clear = (top2[:, 0] - top2[:, 1]) >= tie
    else:  # one channel (sigmoid / logit) or a class map: thresholds / labels
        if r.dim() == 4:
            same = (t[:, 0] > (0.5 if r.min() >= 0 else 0.0)) == (r[:, 0] > (0.5 if r.min() >= 0 else 0.0))
            clear = (r[:, 0] - (0.5 if r.min() >= 0 else 0.0)).abs() >= tie
        else:
            same, clear = t == r, torch.ones_like(r, dtype=torch.bool)
    agree = float(same.double().mean())
    away = float(same[clear].double().mean()) if bool(clear.any()) else 1.0
    return Comparison(rel, mx, agree, away, tie, int(same.numel()))
