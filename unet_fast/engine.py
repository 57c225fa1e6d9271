"""`optimize(model, example_input, ...)` -> `FusedUNet`: capture, passes, plan, and an executor, as a drop-in
nn.Module.

Plans are cached per input (H, W) (and per batch where a fallback bakes the batch into its arguments): a new
size is captured again from a private eval-mode copy of the model, so the caller's model may change or go
away after optimize. Activation arenas live per thread, so concurrent calls do not share buffers.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from unet_fast.backends import resolve_backend
from unet_fast.backends.executor import Executor
from unet_fast.graph.capture import BATCH_AGNOSTIC_FALLBACKS, capture, check_eval_mode
from unet_fast.graph.ir import Fallback, Plan
from unet_fast.graph.lower import lower
from unet_fast.graph.passes import OUTPUT_MODES, PASSES, run_passes
from unet_fast.graph.planner import BufferPlan, plan_buffers

__all__ = ["EngineConfig", "FusedUNet", "optimize"]


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


@dataclass
class _Compiled:
    key: tuple[int, ...]
    plan: Plan
    buffers: BufferPlan
    pass_lines: list[str]
    batch_agnostic: bool
    executors: dict[tuple[str, ...], Executor] = field(default_factory=dict)  # (backend, device, dtype)


def optimize(model: nn.Module, example_input: Tensor, backend: str = "auto", dtype: torch.dtype | None = None, *,
             output: str = "model", cuda_graphs: bool = False, check_finite: bool = False,
             passes: set[str] | frozenset[str] | None = None, exact: bool = False) -> FusedUNet:  # fmt: skip
    """Capture `model` at `example_input`'s shape, fuse it into a Plan and return a FusedUNet running it.

    backend: "auto" (best available here, named in the report) | "torch" | "cpu" | "triton" | "cuda".
    dtype: storage dtype inside the engine (accumulation is fp32); default: the example's dtype.
    output: "model" (what the model returns) | "logits" | "probabilities" | "classes" (argmax class map).
    cuda_graphs: capture and replay each static input shape as a CUDA graph (CUDA devices only).
    check_finite: raise ValueError on NaN/Inf input (costs a pass over the input; off by default).
    exact: direct convolution only. By default the cpu backend runs 3x3 stride-1 convs with >= 16 input
        channels by Winograd F(4x4, 3x3): ~2.5x faster, rel-L2 error ~1e-6 per layer instead of ~1e-7.
    """
    cfg = EngineConfig(backend, dtype, output, cuda_graphs, check_finite,
                       None if passes is None else frozenset(passes), exact)  # fmt: skip
    return FusedUNet(model, example_input, cfg)


class FusedUNet(nn.Module):
    """A U-Net compiled into a fused plan. Call it like the model; `report()` says what was fused."""

    def __init__(self, model: nn.Module, example_input: Tensor, config: EngineConfig) -> None:
        super().__init__()
        _check_example(example_input)
        if config.output not in OUTPUT_MODES:
            raise ValueError(f"output={config.output!r} is not one of {OUTPUT_MODES}")
        if config.passes is not None and not set(config.passes) <= set(PASSES):
            raise ValueError(
                f"unknown passes {sorted(set(config.passes) - set(PASSES))}; choose from {PASSES}"
            )
        check_eval_mode(model)
        self.config = config
        # a private CPU copy, not a submodule: re-capture for new sizes without touching the caller's model,
        # and keep it out of state_dict()
        self.__dict__["_source"] = copy.deepcopy(model).to("cpu").eval()
        self.in_channels = int(example_input.shape[1])
        self._example_shape = tuple(example_input.shape)
        self._setup(example_input.device, config.dtype or example_input.dtype)
        self._get_compiled(self._example_shape)

    # -- state -----------------------------------------------------------------------------------------
    def _setup(self, device: torch.device, dtype: torch.dtype) -> None:
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
        self.__dict__["_compiled"] = {}
        self.__dict__["_graphs"] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for k in ("_lock", "_compiled", "_graphs", "backend"):
            state.pop(k, None)
        state["device"] = str(self.device)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._setup(torch.device(state["device"]), state["dtype"])

    def _apply(self, fn, recurse: bool = True):
        """.to(device / dtype), .cuda(), .half(): re-pack the weights for the new device or dtype."""
        probe = fn(torch.zeros(1, device=self.device, dtype=torch.float32))
        dtype = probe.dtype if probe.dtype != torch.float32 else self.dtype
        if probe.device != self.device or dtype != self.dtype:
            with self._lock:
                compiled = self._compiled
                self._setup(probe.device, dtype)
                for c in compiled.values():
                    c.executors.clear()
                self.__dict__["_compiled"] = compiled
        return self

    # -- compile ---------------------------------------------------------------------------------------
    def _get_compiled(self, shape: tuple[int, ...]) -> _Compiled:
        n, _, h, w = shape
        c = self._compiled.get((h, w)) or self._compiled.get((n, h, w))
        if c is None:
            with self._lock:
                c = self._compiled.get((h, w)) or self._compiled.get((n, h, w))
                if c is None:
                    c = self._compile(shape)
                    self._compiled[c.key] = c
        return c

    def _compile(self, shape: tuple[int, ...]) -> _Compiled:
        example = torch.randn(shape)
        try:
            g = capture(self._source, example)
        except ValueError:
            raise
        except Exception as e:
            raise ValueError(_size_error(self._source, shape, e)) from e
        lines = run_passes(g, self.config.output, self.config.passes)
        on = set(PASSES) if self.config.passes is None else set(self.config.passes)
        plan = lower(g, fuse_reads="fuse_upsample" in on, virtual_concat="eliminate_concat" in on)
        agnostic = all(_batch_agnostic(s) for s in plan.steps if isinstance(s, Fallback))
        key = (shape[2], shape[3]) if agnostic else tuple(shape[i] for i in (0, 2, 3))
        return _Compiled(key, plan, plan_buffers(plan), lines, agnostic)

    def _executor(self, c: _Compiled) -> Executor:
        k = (self.backend.name, str(self.device), str(self.dtype))
        ex = c.executors.get(k)
        if ex is None:
            with self._lock:
                ex = c.executors.get(k)
                if ex is None:
                    ex = Executor(c.plan, c.buffers, self.backend.kernels(), self.backend.name, self.device,
                                  self.dtype, exact=self.config.exact)  # fmt: skip
                    c.executors[k] = ex
        return ex

    # -- run -------------------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        c = self._get_compiled(tuple(x.shape))
        ex = self._executor(c)
        xn = x.permute(0, 2, 3, 1)
        if xn.dtype != self.dtype:
            xn = xn.to(self.dtype)
        if xn.shape[3] > 1 and xn.stride(3) != 1:
            xn = xn.contiguous()
        if self.config.cuda_graphs:
            out = self._replay(ex, xn)
        else:
            out = ex.run(xn)
        return self._finish(c.plan, out, x.dtype)

    def _finish(self, plan: Plan, out: Any, in_dtype: torch.dtype) -> Any:
        if plan.output_kind == "activation":
            out = out.permute(0, 3, 1, 2)  # NCHW shape, channels_last memory: no copy
            if out.dtype != in_dtype:
                out = out.to(in_dtype)
        return out

    def _replay(self, ex: Executor, xn: Tensor) -> Any:
        key = (id(ex), tuple(xn.shape))
        with self._lock:  # one set of static buffers per shape: calls take turns
            entry = self._graphs.get(key)
            if entry is None:
                static_in = xn.clone()
                stream = torch.cuda.Stream(device=self.device)
                stream.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(stream):
                    ex.run(static_in)  # warm-up: lazy init and Triton compiles stay out of the graph
                torch.cuda.current_stream(self.device).wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    static_out = ex.run(static_in)
                entry = self._graphs[key] = (graph, static_in, static_out)
            graph, static_in, static_out = entry
            static_in.copy_(xn)
            graph.replay()
            return static_out.clone()

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

    # -- report ----------------------------------------------------------------------------------------
    def report(self) -> str:
        lines = [f"FusedUNet: backend {self.backend.name!r} ({self.backend_reason}), device {self.device}, "
                 f"dtype {str(self.dtype).replace('torch.', '')}, output {self.config.output!r}"
                 f"{', CUDA graphs' if self.config.cuda_graphs else ''}"]  # fmt: skip
        missing = self.backend.missing_functions() if self.backend.name != "torch" else []
        if missing:
            lines.append(f"  {self.backend.name} kernels missing: {', '.join(missing)} (those steps run the "
                         "torch reference)")  # fmt: skip
        for c in list(self._compiled.values()):
            lines.extend(_describe(c, self._executor(c)))
        return "\n".join(lines)

    def with_backend(self, backend: str, dtype: torch.dtype | None = None) -> FusedUNet:
        """The same plans on another backend (and/or dtype), without capturing again."""
        other = copy.copy(self)
        other.__dict__["config"] = replace(self.config, backend=backend, dtype=dtype or self.dtype)
        other._setup(self.device, dtype or self.dtype)
        other.__dict__["_compiled"] = self._compiled  # plans are backend-independent; executors are keyed
        return other

    def plans(self) -> dict[tuple[int, ...], Plan]:
        return {k: c.plan for k, c in self._compiled.items()}

    def executor_for(self, shape: tuple[int, ...]) -> Executor:
        """The executor that runs inputs of `shape` (tests poison its buffers)."""
        return self._executor(self._get_compiled(shape))


def _describe(c: _Compiled, ex: Executor) -> list[str]:
    key = "x".join(map(str, c.key))
    lines = [f"plan for {'H x W' if len(c.key) == 2 else 'N x H x W'} = {key}: {len(c.plan.steps)} steps"]
    lines += ["  pass " + s for s in c.pass_lines]
    kinds: dict[str, int] = {}
    for s in c.plan.steps:
        kinds[s.kind] = kinds.get(s.kind, 0) + 1
    lines.append("  steps by kind: " + ", ".join(f"{k} {v}" for k, v in kinds.items()))
    reads = sum(1 for s in c.plan.steps for r in s.reads() if r.resample is not None)
    windows = sum(1 for s in c.plan.steps for r in s.reads() if r.size is not None)
    virtual = sum(
        1 for s in c.plan.steps if s.kind == "Conv" and len(s.reads()) - (s.residual is not None) > 1
    )
    lines.append(f"  fuse_upsample: {reads} resamples and {windows} crops/pads read on the fly; "
                 f"{virtual} convs read a virtual concat")  # fmt: skip
    unshared = c.buffers.total_per_sample_unshared(c.plan)
    lines.append(f"  buffers: {len(c.plan.buffers)}; arena {c.buffers.arena_per_sample} elements per sample "
                 f"(unshared {unshared}); batch {'any' if c.batch_agnostic else 'fixed'}")  # fmt: skip
    fallbacks = [s for s in c.plan.steps if isinstance(s, Fallback)]
    lines.append(f"  fallbacks: {len(fallbacks)}" + (" (run by PyTorch)" if fallbacks else ""))
    algos = ex.step_algorithms()
    if any(algos):
        lines.append(
            f"  algorithms: {sum(map(bool, algos))} convs by {next(a for a in algos if a)} (exact=True: none)"
        )
    for i, (s, note, algo) in enumerate(zip(c.plan.steps, ex.step_notes(), algos, strict=True)):
        reads_ = ", ".join(r.describe() if not isinstance(r, str) else r for r in getattr(s, "inputs", [])
                           ) if hasattr(s, "inputs") else ", ".join(r.describe() for r in s.reads())  # fmt: skip
        writes = ", ".join(w.describe() for w in s.writes())
        extra = f" FALLBACK: {s.reason}" if isinstance(s, Fallback) else ""
        extra += f" [{note}]" if note else ""
        extra += f" ({algo})" if algo else ""
        lines.append(f"  {i:3d} {s.kind:<16} {s.name}: {reads_} -> {writes}{extra}")
    return lines


def _batch_agnostic(s: Fallback) -> bool:
    fn = s.fn
    target = getattr(fn, "target", None)
    if target is None:  # graph ops run by PyTorch (NodeFn) take no shapes
        return type(fn).__name__ == "NodeFn"
    name = getattr(target, "__name__", str(target)).split(".")[0]
    return name in BATCH_AGNOSTIC_FALLBACKS


def _check_example(x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
        got = f"shape {tuple(x.shape)}, {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"example_input must be a 4-D float (N, C, H, W) tensor, got {got}")


def _size_error(model: nn.Module, shape: tuple[int, ...], err: Exception) -> str:
    """Name the nearest input sizes the model accepts (tried on the meta device: no compute)."""
    _, c, h, w = shape
    meta = copy.deepcopy(model).to("meta")

    def ok(hh: int, ww: int) -> bool:
        try:
            with torch.no_grad():
                meta(torch.empty(1, c, hh, ww, device="meta"))
            return True
        except Exception:
            return False

    def nearest(size: int, other: int, axis: int) -> str:
        found = []
        for d in range(1, 65):
            for s in (size - d, size + d):
                if s >= 1 and (ok(s, other) if axis == 0 else ok(other, s)):
                    found.append(s)
            if found:
                break
        return " or ".join(map(str, sorted(found))) if found else "none within 64"

    msg = f"the model cannot take an input of {h}x{w} ({type(err).__name__}: {str(err)[:200]})"
    if not ok(h, w):
        hint_h = nearest(h, w, 0) if not ok(h, h if h == w else w) else str(h)
        hint_w = nearest(w, h, 1)
        msg += f"; nearest valid height: {hint_h}, width: {hint_w}"
    return msg
