"""From a model's blended output to the mask a user of that model expects, and what each mask value means.

The model card's head decides the rule (`mask_kind`):

| head, channels K          | kind         | mask value (uint8)                                                  |
| ---                       | ---          | ---                                                                 |
| softmax, K >= 2           | "classes"    | argmax over the K channels: the class index                         |
| logits, K >= 2            | "classes"    | argmax over the K channels (the logits of a softmax model)          |
| sigmoid, K = 1            | "binary"     | 1 where p > 0.5 (the foreground, class_names[0]), else 0            |
| logits, K = 1             | "binary"     | 1 where the logit > 0 (p > 0.5 after a sigmoid), else 0             |
| sigmoid, K = 2..8         | "multilabel" | a bit mask: bit k set where p_k > 0.5, value = sum of 2**k (0: none) |

A softmax over one channel is 1 everywhere and is refused by the model card, as are more than 8 sigmoid
labels (a uint8 bit mask holds 8). The thresholds are `to_onnx`'s class-map head's (0.5 after a sigmoid,
0 on logits); the comparison is strict, as there.

`mask_labels` names the mask values for the legend, `mask_palette` colours every possible mask value (for the
palette PNG and the overlay), `label_fractions` measures each label's share of a mask (the manifest's and
the server's `class_fractions`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import torch
from torch import Tensor

from unet_fast.inference.memory import CHUNK_PIXELS


class ModelCard(Protocol):
    """What the mask rules read of a model card (inference/model_card.ModelCard, which imports this module
    to validate its head: a Protocol instead of an import keeps the two out of an import cycle)."""

    @property
    def num_classes(self) -> int: ...
    @property
    def head(self) -> str: ...
    @property
    def class_names(self) -> list[str]: ...
    @property
    def palette(self) -> list[list[int]]: ...

MaskKind = Literal["classes", "binary", "multilabel"]
MAX_CLASSES = 256  # argmax classes in a uint8 mask
MAX_LABELS = 8  # multi-label bits in a uint8 mask
BACKGROUND = "background"


def mask_kind(head: str, channels: int) -> MaskKind:
    """The rule for a model with this head and this many output channels (see the module's table). Raises
    ValueError for the combinations no rule fits (softmax over one channel; > 8 labels; > 256 classes)."""
    if head not in ("softmax", "sigmoid", "logits"):
        raise ValueError(f"unknown head {head!r}; expected 'softmax', 'sigmoid' or 'logits'")
    if channels < 1:
        raise ValueError(f"a segmentation model needs >= 1 output channel, got {channels}")
    if channels == 1:
        if head == "softmax":
            raise ValueError("a softmax over one channel is 1 everywhere (every pixel would be class 0): a "
                             "one-channel model needs head 'sigmoid' (p > 0.5 is foreground) or 'logits' (> 0)")  # fmt: skip
        return "binary"
    if head == "sigmoid":
        if channels > MAX_LABELS:
            raise ValueError(f"a sigmoid head over {channels} channels is multi-label: its mask is a uint8 bit "
                             f"mask, which holds at most {MAX_LABELS} labels")  # fmt: skip
        return "multilabel"
    if channels > MAX_CLASSES:
        raise ValueError(f"{channels} classes do not fit a uint8 mask (at most {MAX_CLASSES})")
    return "classes"


def threshold(head: str) -> float:
    """The per-channel decision threshold of a binary or multi-label head: 0.5 on probabilities, 0 on logits."""
    return 0.0 if head == "logits" else 0.5


def kind_of(card: ModelCard) -> MaskKind:
    return mask_kind(card.head, card.num_classes)


@dataclass(frozen=True)
class MaskLabel:
    """One label of a mask: the value (multilabel: the bit's value, 2**k) that means `name`, its overlay
    colour, and whether the overlay tints it (the background / "none" value is left as the image)."""

    value: int
    name: str
    rgb: tuple[int, int, int]
    tinted: bool


def mask_labels(card: ModelCard) -> list[MaskLabel]:
    """What the mask's values mean, in the order of `label_fractions`: every class (classes), background
    and the foreground class (binary), or every label's bit (multilabel)."""
    kind = kind_of(card)
    colours = [(int(c[0]), int(c[1]), int(c[2])) for c in card.palette]
    if kind == "classes":
        return [MaskLabel(i, n, colours[i], i != 0) for i, n in enumerate(card.class_names)]
    if kind == "binary":
        return [MaskLabel(0, BACKGROUND, (0, 0, 0), False), MaskLabel(1, card.class_names[0], colours[0], True)]
    return [MaskLabel(1 << k, n, colours[k], True) for k, n in enumerate(card.class_names)]


def mask_palette(card: ModelCard) -> list[list[int]]:
    """[r, g, b] for every value the mask can hold (index = mask value): the class colours; black and the
    foreground colour; for a bit mask, each combination coloured by the mean of its labels' colours."""
    kind = kind_of(card)
    if kind == "classes":
        return [[int(v) for v in c] for c in card.palette]
    if kind == "binary":
        return [[0, 0, 0], [int(v) for v in card.palette[0]]]
    colours = np.asarray(card.palette, np.float64)
    table = [[0, 0, 0]]
    for value in range(1, 1 << card.num_classes):
        present = [k for k in range(card.num_classes) if value >> k & 1]
        table.append([int(v) for v in np.round(colours[present].mean(axis=0))])
    return table


def to_mask(scores: Tensor, card: ModelCard) -> np.ndarray:
    """uint8 [H, W] mask from the blended head output `scores` [K, H, W] (K = the card's num_classes), by
    the card's rule. Decided by chunks of rows, so no [H, W] int64 index map is ever made. Ties in an argmax
    go to the lower class index (torch.argmax's rule)."""
    if scores.dim() != 3 or scores.shape[0] != card.num_classes:
        raise ValueError(f"expected scores [{card.num_classes}, H, W] for this model card, got {tuple(scores.shape)}")
    kind, (h, w) = kind_of(card), scores.shape[1:]
    cut = threshold(card.head)
    mask = torch.empty((h, w), dtype=torch.uint8)
    step = max(1, CHUNK_PIXELS // w)  # an int64 argmax of a whole 180-Mpx image would take 1.4 GB
    for top in range(0, h, step):
        rows = scores[:, top : top + step]
        if kind == "classes":
            # max(0).indices: the same index as argmax(0) (first maximum; NaN counts as the maximum), but a
            # vectorised reduction over the strided channel axis: 20x faster on CPU ([2, 128, 128]: 0.08 ms
            # against 1.6 ms, the Segmenter's whole overhead over the engine at that size)
            mask[top : top + step] = rows.max(0).indices
        elif kind == "binary":
            mask[top : top + step] = rows[0] > cut
        else:
            bits = torch.zeros(rows.shape[1:], dtype=torch.uint8)
            for k in range(rows.shape[0]):
                bits |= (rows[k] > cut).to(torch.uint8) << k
            mask[top : top + step] = bits
    return mask.numpy()


def label_fractions(mask: np.ndarray, card: ModelCard) -> list[float]:
    """Each label's share of the mask's pixels, in `mask_labels` order. Multi-label shares overlap (their
    sum may exceed 1); the others sum to 1."""
    if kind_of(card) == "multilabel":
        return [float(np.count_nonzero(mask & (1 << k))) / mask.size for k in range(card.num_classes)]
    counts = np.bincount(mask.ravel(), minlength=len(mask_labels(card)))
    return (counts / mask.size).tolist()
