"""`FusedUNet`, what `optimize(model, example_input, ...)` (engine/api.py) returns: the module boundary (input
checks, layout, dtype, `.to()`, pickling) over the plan compiler, the plan cache and an executor.

The model is captured once (engine/compiler.py), from a private eval-mode copy, so the caller's model may
change or go away after optimize. Weights are prepared at optimize time, once per (backend, device, dtype),
and shared by every input shape and thread. A new input shape costs a plan derived by rules (milliseconds)
and an activation arena, both in a bounded LRU (`max_cached_shapes`).

An engine can also be saved and loaded (engine/artifact.py: `unet_fast.save` / `unet_fast.load`), and
`optimize(cache_dir=...)` reuses one across processes (engine/cache.py). A loaded engine has its captures
and packed weights but no model (unless one is given): a shape that no saved capture serves is refused
(`CaptureMissingError`) instead of captured again.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from unet_fast.backends import resolve_backend
from unet_fast.backends.executor import Executor
from unet_fast.backends.weights import WeightStore
from unet_fast.engine import report as _report
from unet_fast.engine.compiler import (
    Capture,
    CompiledPlan,
    capture_model,
    check_size,
    compile_plan,
    size_error,
)
from unet_fast.engine.cuda_graphs import CudaGraphRunner
from unet_fast.engine.layout import MEMORY_FORMATS, eager_output_formats, input_format, to_format
from unet_fast.engine.plan_cache import DEFAULT_MAX_CACHED_SHAPES, PlanCache
from unet_fast.graph.capture import check_eval_mode
from unet_fast.graph.ir import Plan
from unet_fast.graph.passes import OUTPUT_MODES, PASSES
from unet_fast.graph.symbolic import GuardError

__all__ = ["CaptureMissingError", "EngineConfig", "FusedUNet", "check_arguments"]


class CaptureMissingError(ValueError):
    """A loaded engine (unet_fast.load) got an input shape that no saved capture serves (a guard of the
    capture fails there, or the captures are static), and it has no model to capture again from."""


@dataclass(frozen=True)
class EngineConfig:
    """Everything optimize() was asked for (picklable)."""

    backend: str = "auto"
    dtype: torch.dtype | None = None  # None: the example input's dtype
    output: str = "model"  # model | logits | probabilities | classes
    cuda_graphs: bool = False
    check_finite: bool = False  # raise on NaN/Inf input (a full pass over the input: off by default)
    passes: frozenset[str] | None = None  # None: all of graph.passes.PASSES (tests switch single passes off)
    exact: bool = False  # refuse approximate algorithms (the cpu backend's Winograd): direct convolution only
    max_cached_shapes: int = DEFAULT_MAX_CACHED_SHAPES  # per-shape plans + arenas kept (LRU)
    output_memory_format: str = "model"  # model | contiguous | channels_last


def check_arguments(model: nn.Module, example_input: Tensor, config: EngineConfig) -> None:
    """What optimize refuses before any work: a bad example, option or a model in training mode (ValueError)."""
    _check_example(example_input)
    if config.output not in OUTPUT_MODES:
        raise ValueError(f"output={config.output!r} is not one of {OUTPUT_MODES}")
    if config.passes is not None and not set(config.passes) <= set(PASSES):
        raise ValueError(
            f"unknown passes {sorted(set(config.passes) - set(PASSES))}; choose from {PASSES}"
        )
    if config.output_memory_format not in MEMORY_FORMATS:
        raise ValueError(f"output_memory_format={config.output_memory_format!r} is not one of {MEMORY_FORMATS}")
    PlanCache(config.max_cached_shapes)  # validates max_cached_shapes
    check_eval_mode(model)


@dataclass
class _Entry:
    """One input shape in the plan cache: its plan, its executor (arenas per thread) and CUDA graph."""

    compiled: CompiledPlan
    executor: Executor
    runner: CudaGraphRunner | None


class FusedUNet(nn.Module):
    """A U-Net compiled into a fused plan. Call it like the model; `report()` says what was fused."""

    def __init__(self, model: nn.Module, example_input: Tensor, config: EngineConfig) -> None:
        super().__init__()
        # an inference module (nothing in it depends on the mode): born in eval mode, so entry points that
        # guard the caller's model (model_guard.eval_model, e.g. sliding_window_inference) take it as it is
        # instead of deep-copying the engine, and rebuilding its weights, on every call
        self.train(False)
        check_arguments(model, example_input, config)
        self.config = config
        # a private CPU copy, not a submodule: captures never touch the caller's model, and it stays out of
        # state_dict()
        self.__dict__["_source"] = copy.deepcopy(model).to("cpu").eval()
        self.in_channels = int(example_input.shape[1])
        self._example_shape = tuple(example_input.shape)
        first = capture_model(self._source, torch.randn(self._example_shape), config.output, config.passes,
                              f"optimize at {_fmt(self._example_shape)}")  # fmt: skip
        self.__dict__["_captures"] = [first]
        self.__dict__["_formats"] = {}  # input memory format -> the model's output format
        self.__dict__["_size_model"] = None  # a loaded engine's stand-in for check_size (no model)
        self.__dict__["_artifact"] = None  # engine/artifact.ArtifactRecord: how a loaded / cached engine came
        self._setup(example_input.device, config.dtype or example_input.dtype)

    @classmethod
    def _restore(cls, config: EngineConfig, captures: list[Capture], in_channels: int,
                 example_shape: tuple[int, ...], formats: dict[str, list[str | None]], source: nn.Module | None,
                 size_model: nn.Module | None, device: torch.device, dtype: torch.dtype,
                 make_store: Any, artifact: Any = None) -> FusedUNet:  # fmt: skip
        """An engine from saved parts (engine/artifact.py): no capture, and no packing of what `make_store`
        (backend name, device, dtype -> WeightStore) already holds. `source`: the model's private copy, when
        the caller gave the model (re-captures then work as after optimize); None: a shape no capture serves
        raises CaptureMissingError."""
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        self.train(False)
        self.config = config
        self.__dict__["_source"] = source
        self.in_channels = int(in_channels)
        self._example_shape = tuple(example_shape)
        self.__dict__["_captures"] = list(captures)
        self.__dict__["_formats"] = dict(formats)
        self.__dict__["_size_model"] = size_model
        self.__dict__["_artifact"] = artifact
        self._setup(device, dtype, make_store)
        return self

    # -- state -----------------------------------------------------------------------------------------
    def _setup(self, device: torch.device, dtype: torch.dtype, make_store: Any = None) -> None:
        """Resolve the backend for (device, dtype), prepare every weight once (through the example shape's
        plan, which names them all) and start an empty plan cache. `make_store(backend name, device, dtype)`:
        the WeightStore to use (a loaded engine's, holding the file's packed weights); default a new one."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        backend, why = resolve_backend(self.config.backend, device, dtype)
        supported = backend.supported_dtypes()
        if dtype not in supported:
            raise ValueError(f"backend {backend.name!r} supports dtypes {supported}, not {dtype}")
        if self.config.cuda_graphs and device.type != "cuda":
            raise ValueError("cuda_graphs=True needs a CUDA device; the model/input is on " + str(device))
        self.device, self.dtype = device, dtype
        self.backend, self.backend_reason = backend, why
        self.__dict__["_lock"] = threading.RLock()
        store = make_store(backend.name, device, dtype) if make_store is not None else None
        self.__dict__["_weights"] = store or WeightStore(backend.name, device, dtype, self.config.exact)
        self.__dict__["_cache"] = PlanCache(self.config.max_cached_shapes)
        self._entry(self._example_shape)  # weights packed now, not on the first call

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for k in ("_lock", "_cache", "_weights", "backend", "_formats"):
            state.pop(k, None)
        if self._source is None:
            state["_saved_formats"] = dict(self._formats)
        state["device"] = str(self.device)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_size_model", None)
        self.__dict__.setdefault("_artifact", None)
        # a loaded engine has no model to probe again: its formats travel with it
        self.__dict__["_formats"] = dict(state.get("_saved_formats", {}))
        self._setup(torch.device(state["device"]), state["dtype"])

    def _apply(self, fn, recurse: bool = True):
        """.to(device / dtype), .cuda(), .half(): prepare the weights for the new device or dtype (the
        captures are device-independent and stay)."""
        probe = fn(torch.zeros(1, device=self.device, dtype=torch.float32))
        dtype = probe.dtype if probe.dtype != torch.float32 else self.dtype
        if dtype != torch.float32 and fn(torch.zeros(1, dtype=torch.float16)).dtype == torch.float32:
            dtype = torch.float32  # .float() / .to(torch.float32): back to fp32 (an fp32 probe cannot tell)
        if probe.device != self.device or dtype != self.dtype:
            with self._lock:
                self._setup(probe.device, dtype)
        return self

    # -- per-shape state -------------------------------------------------------------------------------
    def _entry(self, shape: tuple[int, ...]) -> _Entry:
        key = (int(shape[0]), int(shape[2]), int(shape[3]))
        return self._cache.get(key, lambda: self._build(tuple(int(s) for s in shape)))

    def _build(self, shape: tuple[int, ...]) -> _Entry:
        cap, compiled = self._capture_for(shape)
        compiled = compiled or compile_plan(cap, shape, self.config.passes)
        ex = Executor(compiled.plan, compiled.buffers, self.backend.name, self.device, self.dtype,
                      exact=self.config.exact, weights=self._weights)  # fmt: skip
        runner = CudaGraphRunner(ex, self.device) if self.config.cuda_graphs else None
        return _Entry(compiled, ex, runner)

    def _capture_for(self, shape: tuple[int, ...]) -> tuple[Capture, CompiledPlan | None]:
        """The capture serving `shape`, and its plan for `shape` where a re-capture had to compile it anyway
        (to check it compiles), so _build does not compile it twice."""
        if self._source is not None:
            check_size(self._source, shape)
        elif self._size_model is not None:
            self._size_model.output_size(int(shape[2]), int(shape[3]))  # ValueError naming the nearest sizes
        for cap in reversed(self._captures):
            if cap.matches(shape):
                return cap, None
        # no capture serves this shape: a guard (the model's code branches on this size) or a static capture
        example = torch.randn(shape)
        if self._captures[0].dynamic:
            failed = self._captures[0].graph.failed_guards(shape)
            why = "guard " + "; ".join(f"`{g}`" for g in failed[:2]) + (f" (+{len(failed) - 2})" if len(failed) > 2
                                                                        else "") + " of the first capture fails there"  # fmt: skip
        else:
            why = "static captures"
        if self._source is None:
            raise CaptureMissingError(self._missing_capture(shape, why))
        try:
            cap = capture_model(self._source, example, self.config.output, self.config.passes,
                                f"re-captured at {_fmt(shape)}: {why}", valid=self._example_shape)  # fmt: skip
            compiled = compile_plan(cap, shape, self.config.passes)
        except (ValueError, GuardError):
            raise
        except Exception as e:
            raise ValueError(size_error(self._source, shape, e, self._example_shape)) from e
        self._captures.append(cap)
        # the first capture stays; re-captures are bounded like the shapes (their weights go with them)
        while len(self._captures) > 1 + self.config.max_cached_shapes:
            old = self._captures.pop(1)
            self._weights.forget(old.tensors())
            self.__dict__["_dropped_captures"] = self.__dict__.get("_dropped_captures", 0) + 1
        return cap, compiled

    def _missing_capture(self, shape: tuple[int, ...], why: str) -> str:
        where = getattr(self._artifact, "path", None) or "a file"
        if self._captures[0].dynamic:
            what = f"no saved capture serves an input of {_fmt(shape)}: {why}"
        else:
            sizes = ", ".join(sorted({_fmt(c.graph.example_shape) for c in self._captures}))
            what = (f"its captures are static (the model's dynamic export failed) and serve only {sizes}; "
                    f"{_fmt(shape)} needs a capture of its own")  # fmt: skip
        return (f"this engine was loaded from {where} without the model, and {what}. It cannot capture the model "
                "again: optimize from the model (unet_fast.optimize(model, x)), or load with "
                "unet_fast.load(path, model=model), or save an engine that has run at this size")  # fmt: skip

    # -- run -------------------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Any:
        """What the model returns for `x` (a tensor, or the model's tuple / list / dict of them, same keys),
        each tensor with the model's shape, dtype and memory format; where the model's forward writes into
        its input, `x` is written the same way."""
        self._check_input(x)
        e = self._entry(tuple(x.shape))
        xn = x.permute(0, 2, 3, 1)
        if xn.dtype != self.dtype:
            xn = xn.to(self.dtype)
        if xn.shape[3] > 1 and xn.stride(3) != 1:
            xn = xn.contiguous()
        outs = e.runner.run(xn) if e.runner is not None else e.executor.run_outputs(xn)
        return self._finish(e.compiled, outs, x)

    def _finish(self, c: CompiledPlan, outs: list[Any], x: Tensor) -> Any:
        values = []
        for i, (kind, out) in enumerate(zip(c.plan.output_kinds, outs, strict=True)):
            if kind == "input":
                out = x  # the model returns its input: the caller's tensor itself, as eager does
            elif kind == "activation":
                fmt = self.config.output_memory_format
                if fmt == "model":
                    fmt = self._output_format(x, c.leaf_of(i))
                out = to_format(out, fmt)
                if out.dtype != x.dtype:
                    out = out.to(x.dtype)
            values.append(out)
        if c.input_update is not None:
            # the model's forward writes into its input: so does the module (after every output is computed,
            # from the engine's value of it: rounded to the engine dtype where that is narrower)
            with torch.no_grad():
                x.copy_(values[c.input_update])
        return c.assemble(values)

    def _output_format(self, x: Tensor, leaf: int | None) -> str:
        """The memory format eager PyTorch gives the model's output leaf `leaf` for an input like `x`."""
        fin = input_format(x)
        if fin == "contiguous" or leaf is None:
            return "contiguous"
        fmts = self._formats.get(fin)
        if fmts is None:
            fmts = self._formats[fin] = self._probe_formats(fin, tuple(x.shape))
        return fmts[leaf] if leaf < len(fmts) and fmts[leaf] is not None else fin

    def _probe_formats(self, fin: str, shape: tuple[int, ...]) -> list[str | None]:
        """The model's output formats for an input in format `fin` (layout.eager_output_formats on the
        private copy). Without a model (a loaded engine whose file lacks them) every leaf gets `fin`: what
        convolutions give, and what the probe answers for a model it cannot run on fake tensors."""
        if self._source is None:
            return [fin]
        mode = self.config.output
        if mode == "probabilities" and self._captures[0].model_output:
            mode = "model"  # the model's own softmax / sigmoid: its own output format
        return eager_output_formats(self._source, shape, fin, mode)

    def warmup(self, shapes: Iterable[tuple[int, ...]]) -> FusedUNet:
        """Derive the plan of every (N, C, H, W) in `shapes` and run it once on zeros in this thread, so the
        first real call at those sizes costs what later ones do. At most `max_cached_shapes` stay cached."""
        for shape in shapes:
            shape = tuple(int(s) for s in shape)
            self(torch.zeros(shape, device=self.device, dtype=self.dtype))
        return self

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise ValueError(f"FusedUNet expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"FusedUNet expects a 4-D (N, C, H, W) input, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"FusedUNet expects {self.in_channels} input channels, got {x.shape[1]} "
                             f"(shape {tuple(x.shape)})")  # fmt: skip
        if not x.is_floating_point():
            raise ValueError(f"FusedUNet expects a floating-point input, got {x.dtype}")
        if x.device != self.device:
            raise ValueError(f"the input is on {x.device} but this FusedUNet runs on {self.device}; move the "
                             f"input there, or the module with .to({str(x.device)!r})")  # fmt: skip
        if x.numel() == 0:
            raise ValueError(f"FusedUNet got an empty input (shape {tuple(x.shape)})")
        if self.config.check_finite and not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x)).sum())
            raise ValueError(f"the input contains {bad} NaN/Inf values (check_finite=True)")

    # -- introspection ---------------------------------------------------------------------------------
    def report(self) -> str:
        """What was captured, fused and prepared, and what runs each step: report_data() rendered as text."""
        return _report.render(self.report_data())

    def report_data(self, profile: Tensor | None = None) -> _report.EngineReport:
        """The report as data (engine/report.py EngineReport; `.steps`: one StepRecord per step of the most
        recently used plan: kernel, ISA, dtype, algorithm, fallback reason). `profile`: an input (N, C, H, W)
        to time each step of its plan once (fills StepRecord.time_ms; that plan becomes the most recent)."""
        return _report.collect(self, profile)

    def with_backend(self, backend: str, dtype: torch.dtype | None = None) -> FusedUNet:
        """The same captures on another backend (and/or dtype), without capturing again."""
        other = copy.copy(self)
        other.__dict__["config"] = replace(self.config, backend=backend, dtype=dtype or self.dtype)
        other.__dict__["_formats"] = dict(self._formats)
        other._setup(self.device, dtype or self.dtype)
        return other

    @property
    def captures(self) -> list[Capture]:
        """Every capture of the model: one, plus one per guard change (see report())."""
        return list(self._captures)

    def cached_shapes(self) -> list[tuple[int, int, int]]:
        """(N, H, W) of the plans in the cache, least recently used first."""
        return [k for k, _ in self._cache.items()]

    def plans(self) -> dict[tuple[int, ...], Plan]:
        return {k: e.compiled.plan for k, e in self._cache.items()}

    def executor_for(self, shape: tuple[int, ...]) -> Executor:
        """The executor that runs inputs of `shape` (tests poison its buffers)."""
        return self._entry(tuple(shape)).executor


def _fmt(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def _check_example(x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
        got = f"shape {tuple(x.shape)}, {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"example_input must be a 4-D float (N, C, H, W) tensor, got {got}")
