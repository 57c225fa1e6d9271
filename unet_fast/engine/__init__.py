"""The engine: `optimize(model, example_input, ...)` -> `FusedUNet`, a drop-in nn.Module running a fused plan.

One direction (shared/DESIGN.md): model -> one shape-generic capture (compiler.py) -> passes -> a plan per
input shape, derived by rules in milliseconds (compiler.py) -> a bounded LRU of per-shape plans, buffer
plans and activation arenas (plan_cache.py) -> an Executor (backends/executor.py) over weights prepared once
per (backend, device, dtype) (backends/weights.py). cuda_graphs.py replays an executor as a CUDA graph;
report.py writes `report()`; module.py is the module boundary (input checks, layout, dtype, `.to()`).
"""

from unet_fast.engine.module import EngineConfig, FusedUNet, optimize

__all__ = ["EngineConfig", "FusedUNet", "optimize"]
