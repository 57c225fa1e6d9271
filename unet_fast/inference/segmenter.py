"""Whole-image segmentation with a trained U-Net: image -> normalised tensor -> inference (on the fused engine
when it is available, else the reference model) -> class map.

`Segmenter` is what `unet-fast segment`, `serve` and `--ray` drive; it is also the library entry point:

    seg = Segmenter.from_files("demo_unet.pt")          # reads demo_unet.json beside it
    mask = seg.segment(read_image("cells.png"))          # uint8 [H, W] class indices
    seg.last_strategy.describe()                          # which path ran, and why

Which path (`mode`, tiled_inference.choose_strategy): "auto" runs the whole image in one call when its
activations fit `memory_budget`, else exact halo tiles when the model is exact under tiling (halo.py), else
the blended sliding window; "whole" / "exact" / "blended" force one. Images smaller than the model's minimum
size (or the patch) take the blended window, which pads them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

import unet_fast
from unet_fast.inference.halo import TilingAnalysis
from unet_fast.inference.image_io import match_channels, normalize
from unet_fast.inference.model_card import ModelCard, load_model
from unet_fast.inference.sliding_window import sliding_window_inference
from unet_fast.inference.tiled_inference import (
    DEFAULT_MEMORY_BUDGET,
    MODES,
    Strategy,
    choose_strategy,
    exact_tiled_inference,
)
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
    engine: Any = None  # the FusedUNet when the engine runs (its capture serves the tiling analysis)


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
    return Runner(lambda x: fused(x).float(), name, note, fused)


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
                 patch_size: int | None = None, overlap: float = 0.5, batch_size: int = 4, mode: str = "auto",
                 memory_budget: int = DEFAULT_MEMORY_BUDGET, tile: int = 512) -> None:  # fmt: skip
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
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if memory_budget < 1 or tile < 1:
            raise ValueError(f"memory_budget and tile must be >= 1, got {memory_budget}, {tile}")
        self.mode, self.memory_budget, self.tile = mode, int(memory_budget), int(tile)
        example = torch.randn(batch_size, card.in_channels, self.patch, self.patch)
        self.runner = make_runner(self.model, example, backend, dtype)
        self._analysis: TilingAnalysis | None = None
        self.last_strategy: Strategy | None = None  # the path the last image took (for reports)

    @property
    def analysis(self) -> TilingAnalysis | None:
        """The model's tiling analysis: from the engine's capture (free), else one capture of the model; None
        when the model cannot be captured (then only the blended window and the whole image run)."""
        if self._analysis is None and self.mode != "blended":
            try:
                if self.runner.engine is not None:
                    self._analysis = TilingAnalysis.from_fused(self.runner.engine)
                else:
                    example = torch.zeros(1, self.card.in_channels, self.patch, self.patch)
                    self._analysis = TilingAnalysis.from_model(self.model, example)
            except Exception:  # no capture: the strategy says "no capture", blended windows
                self._analysis = None
        return self._analysis

    def strategy(self, height: int, width: int) -> Strategy:
        """The path an image of height x width takes (see the module docstring); remembered per size."""
        key = (int(height), int(width), self.mode, self.memory_budget, self.tile)
        cache = self.__dict__.setdefault("_strategies", {})
        if key not in cache:
            if len(cache) >= 256:
                cache.pop(next(iter(cache)))
            cache[key] = self._strategy(int(height), int(width))
        return cache[key]

    def _strategy(self, height: int, width: int) -> Strategy:
        try:
            self.model.output_size(height, width)  # ValueError where the model cannot take the size whole
        except ValueError:
            return Strategy("blended", f"blended window: {height}x{width} is smaller than the model takes whole "
                            "(the window pads it)")  # fmt: skip
        analysis = self.analysis
        if self.mode == "auto" and analysis is None:
            return Strategy("whole", "the whole image in one call (no capture to estimate its memory)")
        return choose_strategy(analysis, height, width, mode=self.mode, memory_budget=self.memory_budget,
                               core=self.tile)  # fmt: skip

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
        """[K, H, W] class probabilities (what the model's head gives) for one image, by the path `strategy`
        picks (recorded in `last_strategy`)."""
        x = self.prepare(image, name)
        s = self.strategy(int(x.shape[2]), int(x.shape[3]))
        self.last_strategy = s
        if s.mode == "whole":
            out = self.runner.predict(x)[0]
            if progress is not None:
                progress(1, 1)
            return out
        if s.mode == "exact":
            assert s.geometry is not None
            return exact_tiled_inference(x, self.runner.predict, s.geometry, batch_size=self.batch_size,
                                         progress=progress)[0].float()  # fmt: skip
        return sliding_window_inference(x, self.runner.predict, self.patch, overlap=self.overlap,
                                        batch_size=self.batch_size, progress=progress)[0]  # fmt: skip

    def segment(self, image: np.ndarray, name: str | Path = "image",
                progress: Callable[[int, int], None] | None = None) -> np.ndarray:  # fmt: skip
        """uint8 [H, W] class map for one [H, W, C] image."""
        return self.probabilities(image, name, progress).argmax(0).to(torch.uint8).numpy()
