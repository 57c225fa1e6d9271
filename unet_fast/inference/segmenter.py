"""Whole-image segmentation with a trained U-Net: image -> normalised tensor -> inference (on the fused
engine, or the reference model) -> the mask the model's head calls for.

`Segmenter` is what `unet-fast segment`, `serve` and `--ray` drive; it is also the library entry point:

    seg = Segmenter.from_files("demo_unet.pt")          # reads demo_unet.json beside it
    mask = seg.segment(read_image("cells.png"))          # uint8 [H, W] (see inference/masks.py)
    seg.last_strategy.describe()                          # which path ran, and why
    report = seg.segment_files(["slides/"], "masks/")    # many files: every readable one is done

Which path (`mode`, tiled_inference.choose_strategy): "auto" runs the whole image in one call when its
activations fit `memory_budget`, else exact halo tiles when the model is exact under tiling (halo.py), else
the blended sliding window; "whole" / "exact" / "blended" force one. Images smaller than the model's minimum
size (or the patch) take the blended window, which pads them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from unet_fast.backends import BACKENDS
from unet_fast.engine import optimize
from unet_fast.inference.halo import TilingAnalysis
from unet_fast.inference.image_io import as_model_image, match_channels, normalize
from unet_fast.inference.masks import to_mask
from unet_fast.inference.memory import ImageHeader, check_fits, engine_bytes, segmentation_bytes
from unet_fast.inference.model_card import ModelCard, load_model
from unet_fast.inference.sliding_window import one_output, sliding_window_inference
from unet_fast.inference.tiled_inference import (
    DEFAULT_MEMORY_BUDGET,
    MODES,
    Strategy,
    choose_strategy,
    exact_tiled_inference,
)
from unet_fast.model_guard import eval_model
from unet_fast.models.unet import UNet

if TYPE_CHECKING:
    from unet_fast.inference.batch import BatchReport

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
REFERENCE = "reference"
# Peak memory of a whole-image call over the capture's live activations (Strategy.whole_bytes), with room:
# measured 0.3-1.3x on the fused engine (an arena) and 2.0-3.0x on eager PyTorch, which makes a new tensor
# for every unfused op (need_bytes; tests/inference/test_large_images.py checks the bound)
WHOLE_FUSED, WHOLE_EAGER = 1.5, 3.5  # the plain PyTorch UNet, no engine


@dataclass
class Runner:
    """The callable that maps a batch of patches to the model's head output, and what it is."""

    predict: Callable[[Tensor], Tensor]
    backend: str  # "reference" or the engine backend that runs
    note: str  # one line for the user: what runs, and why (e.g. why the engine is not used)
    engine: Any = None  # the FusedUNet when the engine runs (its capture serves the tiling analysis)
    origin: str = ""  # how the engine came: "built" (optimize), "cache" (a compile-cache hit), "file" (loaded)
    seconds: float = 0.0  # what making the engine took (optimize, or loading its file)


def make_runner(model: UNet, example: Tensor, backend: str = "auto", dtype: str = "float32",
                engine: str | Path | None = None) -> Runner:  # fmt: skip
    """Build the engine for `model` at the patch batch shape of `example` (unet_fast.optimize), or use the
    reference model: when asked (`backend="reference"`), or for "auto" when the engine cannot take this
    model (the note says why). `engine`: an engine file (unet_fast.save) made from this model with this
    backend and dtype: it is loaded instead of built (a Ray actor, a Serve replica); one that cannot be used
    (missing, corrupt, made from other weights or for another backend / dtype) is built instead, the note says
    why. An explicit engine backend that fails is a RuntimeError; an unknown backend or dtype a ValueError."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {tuple(DTYPES)}")
    model = eval_model(model)  # the caller's model keeps its mode and BN statistics
    if backend == REFERENCE:
        if dtype != "float32":
            raise ValueError(f"the reference backend runs float32 only, not {dtype}")
        return Runner(model, REFERENCE, "reference PyTorch model (asked for with --backend reference)")
    if backend not in ("auto", *BACKENDS):
        raise ValueError(f"unknown backend {backend!r}; choose from 'auto', 'reference', {', '.join(BACKENDS)}")
    start = time.perf_counter()
    fused, unused = None, ""
    if engine is not None:
        fused, unused = _load_engine(engine, model, backend, DTYPES[dtype])
    origin = "file"
    if fused is None:
        try:
            fused = optimize(model, example, backend=backend, dtype=DTYPES[dtype])
        except Exception as e:
            if backend != "auto" or dtype != "float32":
                raise RuntimeError(f"the engine could not build backend {backend!r} ({dtype}): {e}") from e
            return Runner(model, REFERENCE, f"reference PyTorch model (the engine failed: {e})")
        cached = fused.report_data().cache
        origin = "cache" if cached is not None and cached.status == "hit" else "built"
    seconds = time.perf_counter() - start
    name = fused.backend.name
    why = fused.backend_reason
    how = {"file": f"loaded from {engine} in {seconds:.2f} s", "cache": f"compile cache hit, {seconds:.2f} s",
           "built": f"built in {seconds:.2f} s"}[origin] + (f"; {unused}" if unused else "")  # fmt: skip
    note = f"unet_fast engine, backend {name!r}, {dtype}" + (f" ({why})" if why else "") + f", {how}"
    return Runner(lambda x: one_output(fused(x)).float(), name, note, fused, origin, seconds)  # a dict model: its 'out'


def _load_engine(path: str | Path, model: UNet, backend: str, dtype: torch.dtype) -> tuple[Any, str]:
    """(the engine in `path`, "") when it fits `model`, `backend` and `dtype`; else (None, why not)."""
    from unet_fast.engine import EngineFileError, load

    try:
        fused = load(path, model=model)
    except (EngineFileError, ValueError, OSError) as e:
        return None, f"the engine file {path} was not used ({type(e).__name__}: {e})"
    if (backend != "auto" and fused.backend.name != backend) or fused.dtype != dtype:
        return None, (f"the engine file {path} runs {fused.backend.name} / {fused.dtype}, not {backend} / {dtype}: "
                      "not used")  # fmt: skip
    return fused, ""


class Segmenter:
    """A trained U-Net plus its model card, ready to segment whole images of any size.

    `max_memory`: bytes one image may take (read + segment + write, `memory.segmentation_bytes`); default
    None: what the machine has available when the image comes (`memory.available_bytes`). `engine`: an engine
    file made from this model (unet_fast.save, `unet-fast export engine`), loaded instead of building the
    engine (see make_runner)."""

    def __init__(self, model: UNet, card: ModelCard, backend: str = "auto", dtype: str = "float32",
                 patch_size: int | None = None, overlap: float = 0.5, batch_size: int = 4,
                 max_memory: int | None = None, mode: str = "auto", memory_budget: int = DEFAULT_MEMORY_BUDGET,
                 tile: int = 512, engine: str | Path | None = None) -> None:  # fmt: skip
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
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if memory_budget < 1 or tile < 1:
            raise ValueError(f"memory_budget and tile must be >= 1, got {memory_budget}, {tile}")
        self.mode, self.memory_budget, self.tile = mode, int(memory_budget), int(tile)
        example = torch.randn(batch_size, card.in_channels, self.patch, self.patch)
        self.runner = make_runner(self.model, example, backend, dtype, engine)
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

    def need_bytes(self, header: ImageHeader, overlay: bool = False) -> int:
        """Peak memory, in bytes, of segmenting the image `header` describes by the path `strategy` picks for
        its size, and writing its mask (and overlay): memory.segmentation_bytes with the engine's share."""
        engine = self.engine_bytes  # a batch of patches or tiles
        try:
            s = self.strategy(header.height, header.width)
        except Exception:  # an image the strategy cannot place is refused later, by the path that runs it
            s = None
        if s is not None and s.mode == "whole" and s.whole_bytes:
            factor = WHOLE_EAGER if self.runner.backend == REFERENCE else WHOLE_FUSED
            engine = max(engine, int(s.whole_bytes * factor))
        return segmentation_bytes(header, self.card.in_channels, self.card.num_classes, overlay, engine)

    def check_fits(self, header: ImageHeader, overlay: bool = False) -> None:
        """ImageTooLargeError (a ValueError) when segmenting the image `header` describes (and writing its
        mask, and its overlay when `overlay`) would need more memory (`need_bytes`) than `max_memory` / the
        memory available; `read_image(path, check=...)` calls this before decoding."""
        check_fits(header, self.need_bytes(header, overlay), "segment", self.max_memory)

    def prepare(self, image: np.ndarray, name: str | Path = "image") -> Tensor:
        """An image ([H, W] or [H, W, C]; integers, bool or unit-range floats: `image_io.as_model_image`) ->
        normalised [1, C, H, W] float32 tensor for this model. ValueError for another shape, dtype or channel
        count."""
        x = match_channels(as_model_image(image, name), self.card.in_channels, name)
        return torch.from_numpy(normalize(x, self.card.mean, self.card.std))[None]

    @torch.no_grad()
    def probabilities(self, image: np.ndarray, name: str | Path = "image",
                      progress: Callable[[int, int], None] | None = None) -> Tensor:  # fmt: skip
        """[K, H, W] head output for one image (probabilities for softmax / sigmoid heads, or logits), by the
        path `strategy` picks (recorded in `last_strategy`)."""
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
        """uint8 [H, W] mask for one image ([H, W] or [H, W, C]: integers scaled by their dtype's maximum,
        bool, or unit-range floats, as `read_image` returns), by the card's head (inference/masks.py): class indices
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
