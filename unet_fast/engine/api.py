"""The engine's entry points: `optimize` (capture, fuse, prepare; or load from the compile cache), `save` and
`load` (engine files, engine/artifact.py)."""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from unet_fast.engine import cache
from unet_fast.engine.artifact import load, save
from unet_fast.engine.module import EngineConfig, FusedUNet
from unet_fast.engine.plan_cache import DEFAULT_MAX_CACHED_SHAPES

__all__ = ["load", "optimize", "save"]


def optimize(model: nn.Module, example_input: Tensor, backend: str = "auto", dtype: torch.dtype | None = None, *,
             output: str = "model", cuda_graphs: bool = False, check_finite: bool = False,
             passes: set[str] | frozenset[str] | None = None, exact: bool = False,
             max_cached_shapes: int = DEFAULT_MAX_CACHED_SHAPES,
             output_memory_format: str = "model", cache_dir: str | os.PathLike | None = None) -> FusedUNet:  # fmt: skip
    """Capture `model` once, fuse it into a shape-generic plan and return a FusedUNet running it.

    example_input: a 4-D float (N, C, H, W) tensor; its device and dtype are the engine's defaults. Any other
        N, H, W works later without capturing again (a model that branches on a size is captured again when
        the branch changes; the report says so).
    backend: "auto" (best available here, named in the report) | "torch" | "cpu" | "triton" | "cuda".
    dtype: storage dtype inside the engine (accumulation is fp32); default: the example's dtype.
    output: "model" (what the model returns) | "logits" | "probabilities" | "classes" (argmax class map).
    cuda_graphs: capture and replay each input shape as a CUDA graph (CUDA devices only).
    check_finite: raise ValueError on NaN/Inf input (costs a pass over the input; off by default).
    exact: direct convolution only. By default the cpu backend runs 3x3 stride-1 convs with >= 16 input
        channels by Winograd, F(6x6, 3x3) or F(4x4, 3x3) per conv by its output size
        (cpu_winograd.f6_decision): ~2.5x faster, rel-L2 error ~1e-6 per layer instead of ~1e-7
        (whole-model figures: docs/winograd.md).
    max_cached_shapes: how many input shapes keep their plan and activation arenas (least recently used
        dropped first); weights are shared by all shapes and never dropped.
    output_memory_format: "model" (default: the memory format the model returns for the same input:
        contiguous for a contiguous input) | "contiguous" | "channels_last" (saves the NHWC -> NCHW copy).
    cache_dir: a folder of saved engines (default: the UNET_FAST_CACHE_DIR environment variable; unset or
        empty: no cache). An engine made before for the same model (classes' source, attributes, weights),
        example channels and dtype, options, forced kernels, CPU and unet_fast / torch versions is loaded
        instead of compiled; otherwise it is compiled and written there (engine/cache.py; the report says
        which, and why an entry was rebuilt or not written).
    Raises ValueError for bad arguments or a model in training mode, BackendUnavailable for a backend that
    cannot run here.
    """
    cfg = EngineConfig(backend, dtype, output, cuda_graphs, check_finite,
                       None if passes is None else frozenset(passes), exact, max_cached_shapes,
                       output_memory_format)  # fmt: skip
    folder = cache.cache_folder(cache_dir)
    if folder is not None:
        return cache.optimize_cached(model, example_input, cfg, folder)
    return FusedUNet(model, example_input, cfg)
