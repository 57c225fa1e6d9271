"""The engine: `optimize(model, example_input, ...)` -> `FusedUNet`, a drop-in nn.Module running a fused plan.

One direction (shared/DESIGN.md): model -> one shape-generic capture (compiler.py) -> passes -> a plan per
input shape, derived by rules in milliseconds (compiler.py) -> a bounded LRU of per-shape plans, buffer
plans and activation arenas (plan_cache.py) -> an Executor (backends/executor.py) over weights prepared once
per (backend, device, dtype) (backends/weights.py). cuda_graphs.py replays an executor as a CUDA graph;
report.py writes `report()`; module.py is the module boundary (input checks, layout, dtype, `.to()`).
artifact.py saves and loads an engine (captures + packed weights) as one file (engine_file.py: the
container; codec.py: the JSON of graphs and packed weights), cache.py is the compile cache over it, and
api.py holds the entry points (`optimize`, `save`, `load`).
"""

from unet_fast.engine.api import load, optimize, save
from unet_fast.engine.artifact import UnsaveableEngine
from unet_fast.engine.engine_file import EngineFileError
from unet_fast.engine.module import CaptureMissingError, EngineConfig, FusedUNet

__all__ = ["CaptureMissingError", "EngineConfig", "EngineFileError", "FusedUNet", "UnsaveableEngine", "load", "optimize",
           "save"]
