"""Sliding-window inference with Gaussian blending (the scheme of nnU-Net and MONAI).

An image larger than the model's comfortable patch is cut into overlapping patches; each patch's
prediction is weighted by a Gaussian importance map (1 at the centre, small at the edges, sigma = patch/8
like nnU-Net), accumulated, and divided by the accumulated weight. Predictions near a patch border, where
the network sees zero padding instead of context, thus count little wherever another patch covers the
pixel better. An image smaller than a patch is padded up to it and the result cropped back.

Patches are run in batches of a fixed size (the last batch padded), so a shape-specialised engine sees
one input shape only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from unet_fast.model_guard import eval_model

Predictor = Callable[[Tensor], Tensor]
BlendMode = Literal["gaussian", "constant"]


def gaussian_importance_map(patch: tuple[int, int], sigma_scale: float = 1 / 8,
                            dtype: torch.dtype = torch.float32) -> Tensor:  # fmt: skip
    """[pH, pW] separable Gaussian centred on the patch, sigma = sigma_scale * patch size, maximum 1.

    Always positive (the corner value is exp(-(1 / sigma_scale)^2 / 4), 3.4e-4 for 1/8), so a pixel
    covered by any patch has a nonzero total weight."""
    if sigma_scale <= 0:
        raise ValueError(f"sigma_scale must be positive, got {sigma_scale}")
    axes = []
    for n in patch:
        t = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
        axes.append(torch.exp(-(t**2) / (2 * (sigma_scale * n) ** 2)))
    w = axes[0][:, None] * axes[1][None, :]
    return (w / w.max()).to(dtype)


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start offsets of patches along one axis: evenly spread from 0 to size - patch, as few as give at
    least `overlap` (fraction of the patch) between neighbours. `size` must be >= `patch`."""
    if size < patch:
        raise ValueError(f"window_starts: size {size} is smaller than the patch {patch}")
    if size == patch:
        return [0]
    stride = max(1, math.floor(patch * (1 - overlap)))
    n = math.ceil((size - patch) / stride) + 1
    step = (size - patch) / (n - 1)
    return [round(i * step) for i in range(n)]


@dataclass(frozen=True)
class WindowPlan:
    """Where the patches go for one image of `size` (after padding to `padded`)."""

    size: tuple[int, int]
    padded: tuple[int, int]
    patch: tuple[int, int]
    starts: tuple[tuple[int, int], ...]  # (top, left) per patch, row-major


def plan_windows(size: tuple[int, int], patch: tuple[int, int], overlap: float) -> WindowPlan:
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if min(patch) < 1:
        raise ValueError(f"patch size must be positive, got {patch}")
    if min(size) < 1:
        raise ValueError(f"image size must be positive, got {size}")
    padded = (max(size[0], patch[0]), max(size[1], patch[1]))
    ys = window_starts(padded[0], patch[0], overlap)
    xs = window_starts(padded[1], patch[1], overlap)
    return WindowPlan(size, padded, patch, tuple((y, x) for y in ys for x in xs))


def _pad_to(image: Tensor, padded: tuple[int, int], mode: str, value: float) -> Tensor:
    dh, dw = padded[0] - image.shape[-2], padded[1] - image.shape[-1]
    if not dh and not dw:
        return image
    # Centre the image in the padded canvas so the model sees it away from the canvas edge on both sides.
    pads = [dw // 2, dw - dw // 2, dh // 2, dh - dh // 2]
    if mode == "constant":
        return F.pad(image, pads, mode="constant", value=value)
    # reflect needs pad < size; replicate works for any size.
    return F.pad(image, pads, mode=mode if mode != "reflect" or (dh < image.shape[-2] and dw < image.shape[-1])
                 else "replicate")  # fmt: skip


@torch.no_grad()
def one_output(out: object) -> Tensor:
    """The predictor's output as one tensor: a tensor, or the "out" entry of a mapping (torchvision's
    segmentation models return {"out": ..., "aux": ...}). Anything else is a ValueError: the windows are
    blended from one [B, K, pH, pW] tensor, and picking an element of a tuple could pick the wrong one."""
    if isinstance(out, Tensor):
        return out
    if isinstance(out, Mapping) and isinstance(out.get("out"), Tensor):
        return out["out"]
    from unet_fast.parity import describe

    raise ValueError(f"the predictor returns {describe(out)}; sliding-window inference needs one tensor (or a "
                     "dict with an 'out' tensor, as torchvision's models return): pass a predictor that returns "
                     "the output to blend, e.g. lambda x: model(x)[0]")  # fmt: skip


def sliding_window_inference(image: Tensor, predictor: Predictor, patch_size: int | tuple[int, int],
                             overlap: float = 0.5, batch_size: int = 4, blend: BlendMode = "gaussian",
                             sigma_scale: float = 1 / 8, pad_mode: str = "replicate", pad_value: float = 0.0,
                             fixed_batch: bool = True,
                             progress: Callable[[int, int], None] | None = None) -> Tensor:  # fmt: skip
    """Run `predictor` over `image` [N, C, H, W] patch by patch and blend: returns [N, K, H, W] (fp32).

    `predictor` maps [B, C, pH, pW] to [B, K, pH, pW] (a "same"-padded model; a valid-padded U-Net, whose
    output is smaller than its input, is rejected); a predictor returning a dict is read at its "out" key
    (torchvision's convention), any other container is a ValueError. `overlap` is the fraction of a patch shared with its
    neighbour. `blend="constant"` averages with equal weights. `fixed_batch` pads the last batch of
    patches to `batch_size` so the predictor always sees one shape. `progress(done, total)` is called
    after each batch. Each image of the batch N is windowed on its own."""
    if image.dim() != 4:
        raise ValueError(f"sliding_window_inference expects [N, C, H, W], got shape {tuple(image.shape)}")
    if isinstance(predictor, torch.nn.Module):  # a model in training mode: run an eval copy, never .eval() it
        predictor = eval_model(predictor)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if blend not in ("gaussian", "constant"):
        raise ValueError(f"blend must be 'gaussian' or 'constant', got {blend!r}")
    patch = (
        (patch_size, patch_size) if isinstance(patch_size, int) else (int(patch_size[0]), int(patch_size[1]))
    )
    n, _, h, w = image.shape
    plan = plan_windows((h, w), patch, overlap)
    if blend == "gaussian":
        weight = gaussian_importance_map(patch, sigma_scale).to(image.device)
    else:
        weight = torch.ones(patch, device=image.device)
    total_batches = n * math.ceil(len(plan.starts) / batch_size)
    done = 0
    result: Tensor | None = None  # [N, K, H, W]; for one unpadded image, the blended sum itself (no copy)
    for b in range(n):
        canvas = _pad_to(image[b : b + 1], plan.padded, pad_mode, pad_value)[0]
        acc: Tensor | None = None
        norm = torch.zeros(plan.padded, device=image.device)
        for i in range(0, len(plan.starts), batch_size):
            starts = plan.starts[i : i + batch_size]
            patches = torch.stack([canvas[:, y : y + patch[0], x : x + patch[1]] for y, x in starts])
            if fixed_batch and len(starts) < batch_size:
                filler = patches.new_zeros((batch_size - len(starts), *patches.shape[1:]))
                patches = torch.cat([patches, filler])
            out = one_output(predictor(patches))
            if out.dim() != 4 or out.shape[0] != patches.shape[0] or tuple(out.shape[2:]) != patch:
                raise ValueError(
                    f"the predictor mapped patches {tuple(patches.shape)} to {tuple(out.shape)}; sliding-window "
                    f"inference needs [B, K, {patch[0]}, {patch[1]}] (a 'same'-padded model)"
                )
            out = out[: len(starts)].float()
            if acc is None:
                acc = torch.zeros((out.shape[1], *plan.padded), device=image.device)
            for (y, x), p in zip(starts, out, strict=True):
                acc[:, y : y + patch[0], x : x + patch[1]] += p * weight
                norm[y : y + patch[0], x : x + patch[1]] += weight
            done += 1
            if progress is not None:
                progress(done, total_batches)
        assert acc is not None  # plan.starts is never empty
        # A weighted mean of the patch outputs at every pixel: probabilities stay probabilities (softmax and
        # sigmoid heads alike: each channel is blended on its own), logits stay logits. In place: a blended
        # sum of a 180-Mpx image is gigabytes.
        blended = acc.div_(norm)
        del norm
        top, left = (plan.padded[0] - h) // 2, (plan.padded[1] - w) // 2
        crop = blended[:, top : top + h, left : left + w]
        if n == 1:
            result = (crop if crop.is_contiguous() else crop.contiguous())[None]
        else:
            if result is None:
                result = torch.empty((n, crop.shape[0], h, w), device=image.device)
            result[b] = crop
    assert result is not None
    return result
