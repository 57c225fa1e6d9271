"""Several images through as few model calls as possible, for the server's dynamic batching.

Images the segmenter runs whole (its default when they fit the memory budget) are stacked by size: one engine
call per size. Images on the blended window share one stream of patch batches:

`Segmenter.segment` windows one image at a time and pads its last batch of patches with zeros, so N
concurrent requests for 128 x 128 tiles would cost N model calls of 4 patches each, 3 of them filler.
`segment_many` runs the exact `Segmenter.segment` code path for every image twice, with the runner
swapped: pass 1 records the patches each image asks for (and answers zeros: that pass's output is thrown
away), then all recorded patches go through the real runner in full batches of `batch_size` (the engine's
one shape), then pass 2 replays each image's patch outputs in order, so the blending, crop and the mask
rule of the model's head are `Segmenter.segment`'s own. The masks equal `Segmenter.segment`'s bit for bit
because a patch's output does not depend on which other patches share its batch (inference-mode conv nets;
checked in the tests).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import Tensor

from unet_fast.inference.masks import to_mask
from unet_fast.inference.segmenter import Runner, Segmenter
from unet_fast.inference.sliding_window import plan_windows


class _Recorder:
    """Keeps the first `real` patches it is given (the rest are the window's filler) and returns zeros of
    the model's `channels` (pass 1's blend and mask are discarded, but must be well-formed)."""

    def __init__(self, real: int, channels: int) -> None:
        self.real, self.channels, self.patches = real, channels, []

    def __call__(self, x: Tensor) -> Tensor:
        take = min(x.shape[0], self.real - sum(p.shape[0] for p in self.patches))
        self.patches.append(x[:take].clone())
        return x.new_zeros((x.shape[0], self.channels, *x.shape[2:]))


class _Replayer:
    """Answers each call with the next recorded outputs, zero rows for the window's filler."""

    def __init__(self, outputs: Tensor) -> None:
        self.outputs, self.used = outputs, 0

    def __call__(self, x: Tensor) -> Tensor:
        out = self.outputs[self.used : self.used + x.shape[0]]
        self.used += out.shape[0]
        if out.shape[0] < x.shape[0]:
            out = torch.cat([out, out.new_zeros((x.shape[0] - out.shape[0], *out.shape[1:]))])
        return out


def _with_runner(seg: Segmenter, predict) -> Segmenter:
    clone = copy.copy(seg)  # shares the model and card; only the runner differs
    clone.runner = Runner(predict, seg.runner.backend, seg.runner.note)
    return clone


@torch.no_grad()
def segment_many(seg: Segmenter, images: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    """uint8 [H, W] class maps for [H, W, C] images (any sizes), equal to `seg.segment(image)` each. Images the
    segmenter runs whole are stacked by size into one engine call per size; images on the blended window have
    their patches batched together (record / replay); exact-tile images run one by one. Returns (masks,
    number of model calls)."""
    masks: list[np.ndarray | None] = [None] * len(images)
    calls = 0
    by_size: dict[tuple[int, int], list[int]] = {}
    blended: list[int] = []
    for i, image in enumerate(images):
        mode = seg.strategy(int(image.shape[0]), int(image.shape[1])).mode
        if mode == "whole":
            by_size.setdefault((int(image.shape[0]), int(image.shape[1])), []).append(i)
        elif mode == "blended":
            blended.append(i)
        else:
            masks[i] = seg.segment(image)
            calls += 1
    for idx in by_size.values():
        x = torch.cat([seg.prepare(images[i]) for i in idx])
        probs = seg.runner.predict(x)
        calls += 1
        for i, p in zip(idx, probs, strict=True):
            seg.last_strategy = seg.strategy(*images[i].shape[:2])
            masks[i] = to_mask(p, seg.card)  # the card's head decides (argmax, threshold, label bits)
    if blended:
        done, n = _segment_blended(seg, [images[i] for i in blended])
        calls += n
        for i, m in zip(blended, done, strict=True):
            masks[i] = m
    return [m for m in masks if m is not None], calls


def _segment_blended(seg: Segmenter, images: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    """The blended-window images: every image's patches through the engine in full batches, then each image's
    own blend replayed from them (record / replay, see the module docstring)."""
    recorders = []
    for image in images:
        n = len(plan_windows(image.shape[:2], (seg.patch, seg.patch), seg.overlap).starts)
        recorders.append(_Recorder(n, seg.card.num_classes))
        _with_runner(seg, recorders[-1]).segment(image)
    patches = torch.cat([p for r in recorders for p in r.patches])
    outputs, calls, bs = [], 0, seg.batch_size
    for i in range(0, patches.shape[0], bs):
        chunk = patches[i : i + bs]
        real = chunk.shape[0]
        if real < bs:  # the engine is built for one batch shape, as in sliding_window_inference
            chunk = torch.cat([chunk, chunk.new_zeros((bs - real, *chunk.shape[1:]))])
        outputs.append(seg.runner.predict(chunk)[:real])
        calls += 1
    flat = torch.cat(outputs)
    masks, start = [], 0
    for image, rec in zip(images, recorders, strict=True):
        n = rec.real
        masks.append(_with_runner(seg, _Replayer(flat[start : start + n])).segment(image))
        start += n
    return masks, calls
