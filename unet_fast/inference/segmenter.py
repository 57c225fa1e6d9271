"""Whole-image segmentation with a trained U-Net: image -> normalised tensor -> sliding-window inference
(on the fused engine when it is available, else the reference model) -> class map.

`Segmenter` is what `unet-fast segment` drives; it is also the library entry point:

    seg = Segmenter.from_files("demo_unet.pt")          # reads demo_unet.json beside it
    mask = seg.segment(read_image("cells.png"))          # uint8 [H, W] class indices
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

import unet_fast
from unet_fast.inference.image_io import match_channels, normalize
from unet_fast.inference.model_card import ModelCard, load_model
from unet_fast.inference.sliding_window import one_output, sliding_window_inference
from unet_fast.model_guard import eval_model
from unet_fast.models.unet import UNet

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
REFERENCE = "reference"  # the plain PyTorch UNet, no engine


@dataclass
class Runner:
    """The callable that maps a batch of patches to class probabilities, and what it is."""

    predict: Callable[[Tensor], Tensor]
    backend: str  # "reference" or the engine backend asked for
    note: str  # one line for the user: what runs, and why (e.g. why the engine is not used)


def make_runner(model: UNet, example: Tensor, backend: str = "auto", dtype: str = "float32") -> Runner:
    """Build the engine for `model` at the patch batch shape of `example` (unet_fast.optimize), or use the
    reference model: when asked (`backend="reference"`), or for "auto" when the engine is missing or
    cannot take this model (the note says why). An explicit engine backend that fails is an error."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {tuple(DTYPES)}")
    model = eval_model(model)  # the caller's model keeps its mode and BN statistics
    if backend == REFERENCE:
        if dtype != "float32":
            raise ValueError(f"the reference backend runs float32 only, not {dtype}")
        return Runner(model, REFERENCE, "reference PyTorch model (asked for with --backend reference)")
    optimize = getattr(unet_fast, "optimize", None)
    known = _engine_backends()
    if known is not None and backend not in ("auto", *known):
        raise ValueError(f"unknown backend {backend!r}; choose from 'auto', 'reference', {', '.join(known)}")
    if optimize is None:
        if backend != "auto":
            raise RuntimeError(f"backend {backend!r} asked for, but this build has no unet_fast.optimize")
        if dtype != "float32":
            raise ValueError(f"without the engine only float32 runs (reference model), not {dtype}")
        return Runner(model, REFERENCE, "reference PyTorch model (unet_fast.optimize is not available)")
    try:
        fused = optimize(model, example, backend=backend, dtype=DTYPES[dtype])
    except Exception as e:
        if backend != "auto" or dtype != "float32":
            raise RuntimeError(f"the engine could not build backend {backend!r} ({dtype}): {e}") from e
        return Runner(model, REFERENCE, f"reference PyTorch model (the engine failed: {e})")
    chosen = getattr(fused, "backend", None)
    name = str(getattr(chosen, "name", backend))
    why = getattr(fused, "backend_reason", "")
    note = f"unet_fast engine, backend {name!r}, {dtype}" + (f" ({why})" if why else "")
    return Runner(lambda x: one_output(fused(x)).float(), name, note)  # a dict model: its 'out'


def _engine_backends() -> tuple[str, ...] | None:
    """The engine's backend names, or None when this build has no engine registry to ask."""
    try:
        from unet_fast.backends import BACKENDS
    except ImportError:
        return None
    return tuple(BACKENDS)


class Segmenter:
    """A trained U-Net plus its model card, ready to segment whole images of any size."""

    def __init__(self, model: UNet, card: ModelCard, backend: str = "auto", dtype: str = "float32",
                 patch_size: int | None = None, overlap: float = 0.5, batch_size: int = 4) -> None:  # fmt: skip
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
        self.overlap, self.batch_size = overlap, batch_size
        example = torch.randn(batch_size, card.in_channels, self.patch, self.patch)
        self.runner = make_runner(self.model, example, backend, dtype)

    @classmethod
    def from_files(cls, weights: str | Path, card: str | Path | None = None, **kwargs) -> Segmenter:
        model, model_card = load_model(weights, card)
        return cls(model, model_card, **kwargs)

    def prepare(self, image: np.ndarray, name: str | Path = "image") -> Tensor:
        """[H, W, C] unit-range image -> normalised [1, C, H, W] tensor for this model."""
        x = match_channels(image, self.card.in_channels, name)
        return torch.from_numpy(normalize(x, self.card.mean, self.card.std))[None]

    @torch.no_grad()
    def probabilities(self, image: np.ndarray, name: str | Path = "image",
                      progress: Callable[[int, int], None] | None = None) -> Tensor:  # fmt: skip
        """[K, H, W] blended class probabilities (what the model's head gives) for one image."""
        x = self.prepare(image, name)
        return sliding_window_inference(x, self.runner.predict, self.patch, overlap=self.overlap,
                                        batch_size=self.batch_size, progress=progress)[0]  # fmt: skip

    def segment(self, image: np.ndarray, name: str | Path = "image",
                progress: Callable[[int, int], None] | None = None) -> np.ndarray:  # fmt: skip
        """uint8 [H, W] class map for one [H, W, C] image."""
        return self.probabilities(image, name, progress).argmax(0).to(torch.uint8).numpy()
