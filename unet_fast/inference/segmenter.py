"""Whole-image segmentation with a trained U-Net: image -> normalised tensor -> sliding-window inference
(on the fused engine, or the reference model) -> the mask the model's head calls for.

`Segmenter` is what `unet-fast segment` drives; it is also the library entry point:

    seg = Segmenter.from_files("demo_unet.pt")          # reads demo_unet.json beside it
    mask = seg.segment(read_image("cells.png"))          # uint8 [H, W] (see inference/masks.py)
    report = seg.segment_files(["slides/"], "masks/")    # many files: every readable one is done
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from unet_fast.backends import BACKENDS
from unet_fast.engine import optimize
from unet_fast.inference.image_io import match_channels, normalize
from unet_fast.inference.masks import to_mask
from unet_fast.inference.memory import ImageHeader, check_fits, engine_bytes, segmentation_bytes
from unet_fast.inference.model_card import ModelCard, load_model
from unet_fast.inference.sliding_window import one_output, sliding_window_inference
from unet_fast.model_guard import eval_model
from unet_fast.models.unet import UNet

if TYPE_CHECKING:
    from unet_fast.inference.batch import BatchReport

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
REFERENCE = "reference"  # the plain PyTorch UNet, no engine


@dataclass
class Runner:
    """The callable that maps a batch of patches to the model's head output, and what it is."""

    predict: Callable[[Tensor], Tensor]
    backend: str  # "reference" or the engine backend that runs
    note: str  # one line for the user: what runs, and why (e.g. why the engine is not used)


def make_runner(model: UNet, example: Tensor, backend: str = "auto", dtype: str = "float32") -> Runner:
    """Build the engine for `model` at the patch batch shape of `example` (unet_fast.optimize), or use the
    reference model: when asked (`backend="reference"`), or for "auto" when the engine cannot take this
    model (the note says why). An explicit engine backend that fails is a RuntimeError; an unknown backend
    or dtype a ValueError."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {tuple(DTYPES)}")
    model = eval_model(model)  # the caller's model keeps its mode and BN statistics
    if backend == REFERENCE:
        if dtype != "float32":
            raise ValueError(f"the reference backend runs float32 only, not {dtype}")
        return Runner(model, REFERENCE, "reference PyTorch model (asked for with --backend reference)")
    if backend not in ("auto", *BACKENDS):
        raise ValueError(f"unknown backend {backend!r}; choose from 'auto', 'reference', {', '.join(BACKENDS)}")
    try:
        fused = optimize(model, example, backend=backend, dtype=DTYPES[dtype])
    except Exception as e:
        if backend != "auto" or dtype != "float32":
            raise RuntimeError(f"the engine could not build backend {backend!r} ({dtype}): {e}") from e
        return Runner(model, REFERENCE, f"reference PyTorch model (the engine failed: {e})")
    name = fused.backend.name
    why = fused.backend_reason
    note = f"unet_fast engine, backend {name!r}, {dtype}" + (f" ({why})" if why else "")
    return Runner(lambda x: one_output(fused(x)).float(), name, note)  # a dict model: its 'out'


class Segmenter:
    """A trained U-Net plus its model card, ready to segment whole images of any size.

    `max_memory`: bytes one image may take (read + segment + write, `memory.segmentation_bytes`); default
    None: what the machine has available when the image comes (`memory.available_bytes`)."""

    def __init__(self, model: UNet, card: ModelCard, backend: str = "auto", dtype: str = "float32",
                 patch_size: int | None = None, overlap: float = 0.5, batch_size: int = 4,
                 max_memory: int | None = None) -> None:  # fmt: skip
        if model.config.padding != "same":
            raise ValueError(
                "sliding-window segmentation needs a 'same'-padded UNet (output size = input size)"
            )
        self.model, self.card = eval_model(model), card  # never model.eval(): the caller's model stays
        self.patch = int(patch_size or card.patch_size)
        model.output_size(self.patch, self.patch)  # ValueError naming valid sizes if the model cannot take it
        if not 0 <= overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        if max_memory is not None and max_memory < 1:
            raise ValueError(f"max_memory must be >= 1 byte or None, got {max_memory}")
        self.overlap, self.batch_size, self.max_memory = overlap, batch_size, max_memory
        cfg = model.config
        self.engine_bytes = engine_bytes(cfg.base_channels, cfg.depth, self.patch, batch_size)
        example = torch.randn(batch_size, card.in_channels, self.patch, self.patch)
        self.runner = make_runner(self.model, example, backend, dtype)

    @classmethod
    def from_files(cls, weights: str | Path, card: str | Path | None = None, **kwargs) -> Segmenter:
        model, model_card = load_model(weights, card)
        return cls(model, model_card, **kwargs)

    def check_fits(self, header: ImageHeader, overlay: bool = False) -> None:
        """ImageTooLargeError (a ValueError) when segmenting the image `header` describes (and writing its
        mask, and its overlay when `overlay`) would need more memory than `max_memory` / the memory
        available; `read_image(path, check=...)` calls this before decoding."""
        need = segmentation_bytes(header, self.card.in_channels, self.card.num_classes, overlay, self.engine_bytes)
        check_fits(header, need, "segment", self.max_memory)

    def prepare(self, image: np.ndarray, name: str | Path = "image") -> Tensor:
        """[H, W, C] unit-range image -> normalised [1, C, H, W] tensor for this model."""
        x = match_channels(image, self.card.in_channels, name)
        return torch.from_numpy(normalize(x, self.card.mean, self.card.std))[None]

    @torch.no_grad()
    def probabilities(self, image: np.ndarray, name: str | Path = "image",
                      progress: Callable[[int, int], None] | None = None) -> Tensor:  # fmt: skip
        """[K, H, W] blended head output for one image: probabilities (softmax / sigmoid heads) or logits."""
        x = self.prepare(image, name)
        return sliding_window_inference(x, self.runner.predict, self.patch, overlap=self.overlap,
                                        batch_size=self.batch_size, progress=progress)[0]  # fmt: skip

    def segment(self, image: np.ndarray, name: str | Path = "image",
                progress: Callable[[int, int], None] | None = None) -> np.ndarray:  # fmt: skip
        """uint8 [H, W] mask for one [H, W, C] image, by the card's head (inference/masks.py): class indices
        (softmax / logits over >= 2 classes), 0 / 1 (one sigmoid or logit channel, > 0.5 / > 0), or a
        multi-label bit mask (sigmoid over 2..8 channels: bit k where p_k > 0.5)."""
        return to_mask(self.probabilities(image, name, progress), self.card)

    def segment_files(self, inputs: Sequence[str | Path], out_dir: str | Path, *, overlay: bool = True,
                      alpha: float = 0.5, max_pixels: int | None = None, on_result: Callable | None = None,
                      progress: Callable | None = None) -> BatchReport:  # fmt: skip
        """Segment many image files (files, folders, globs) into `out_dir`, as `unet-fast segment` does:
        every readable input is segmented and written; each failure is recorded by name (`report.failures`),
        never raised. See `inference.batch.segment_files` for the arguments and the errors raised."""
        from unet_fast.inference.batch import segment_files

        return segment_files(self, inputs, out_dir, overlay=overlay, alpha=alpha, max_pixels=max_pixels,
                             on_result=on_result, progress=progress)  # fmt: skip
