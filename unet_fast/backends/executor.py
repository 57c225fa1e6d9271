"""The one executor: walks a Plan and runs, per step, the kernel the registry chose for it.

Which kernel runs a step is decided once, when the executor is prepared: `kernels.registry.choose` picks the
highest-ranked eligible kernel of the backend whose `supports(step, dtype)` takes the step, else the torch
reference (kernels/reference.py) with the reason. The choice is kept with the packed weight (`_Prepared`) and
reported as a structured record (`records()`: kernel, ISA, algorithm, fallback reason); running only runs
it: nothing re-decides per call, and a kernel that raises is an error, not a silent switch.

Weights come from a WeightStore (backends/weights.py): packed once per (kernel, weight) for one (backend,
device, dtype) and shared by the executors of every input shape; the store also holds what the caller
forced (kernels/registry.Choices, read once per optimize). Activations live in an arena (graph/planner.py)
per thread and batch size, reused across calls and freed with the thread (threading.local) or with the
executor (evicted from the engine's plan cache); the output is allocated per call.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from unet_fast.backends.weights import WeightStore
from unet_fast.graph.ir import Concat, Conv, ConvTranspose2x2, Fallback, Head, Plan, Pool, Slice, Step
from unet_fast.graph.lower import NodeFn
from unet_fast.graph.opgraph import AtenCall, Node
from unet_fast.graph.planner import BufferPlan
from unet_fast.kernels import registry, spec
from unet_fast.kernels.spec import InputView

# What runs a graph Fallback step (a callable the capture could not lower): PyTorch itself, not a kernel.
FALLBACK_KERNEL = "torch.fallback"


@dataclass(frozen=True)
class StepRecord:
    """What runs one plan step, as data (FusedUNet.report_data().steps; report() renders it).

    index, kind ('Conv', 'ConvTranspose2x2', 'Concat', 'Resample', 'Pool', 'Head', 'Fallback'), name (the
    source layers). kernel: the registry name of the implementation ('cpu.conv2d.winograd.avx512'; a Fallback
    step: FALLBACK_KERNEL). backend: whose kernel it is ('torch' for the reference and for Fallback steps).
    isa: the CPU variant / tile backend it runs ('' none). dtype: the storage dtype ('bfloat16'). algorithm,
    label: what it computes with, and how the report names it. fallback: '' when the requested backend's
    kernel runs the step, else why the reference (or, for a Fallback step, PyTorch) does. passed_over:
    (kernel, reason) of better-ranked candidates that did not take it. reads / writes: the buffer slices.
    time_ms: measured per-step wall time (Executor.profile), None where not measured."""

    index: int
    kind: str
    name: str
    kernel: str
    backend: str
    isa: str
    dtype: str
    algorithm: str
    label: str
    fallback: str = ""
    passed_over: tuple[tuple[str, str], ...] = ()
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    time_ms: float | None = None

    @property
    def reference(self) -> bool:
        """True when the torch reference runs this plan step for a backend whose kernels do not take it."""
        return bool(self.fallback) and self.kind != "Fallback"


@dataclass
class _Prepared:
    step: Step
    kernel: registry.Kernel | None  # None: a graph Fallback step (PyTorch runs its callable)
    choice: registry.Choice | None = None
    weight: Any = None
    bias: Tensor | None = None
    run: Callable[..., Any] | None = field(default=None, repr=False)


class Executor:
    def __init__(self, plan: Plan, buffers: BufferPlan, backend: str, device: torch.device, dtype: torch.dtype, *,
                 exact: bool = False, weights: WeightStore | None = None) -> None:  # fmt: skip
        """`backend`: the backend name whose registered kernels run the plan ('torch' = the reference).
        `weights`: the store shared by every plan of one model on this (backend, device, dtype), holding what
        the caller forced; a private one (reading UNET_FAST_KERNELS now) when None. Raises ValueError for a
        bad forced choice (an unknown or unrunnable ISA)."""
        self.plan, self.buffers = plan, buffers
        self.backend_name, self.device, self.dtype = backend, device, dtype
        self.poison = False  # tests: fill buffers with NaN before each run so an unwritten element shows
        self.weights = weights if weights is not None else WeightStore(backend, device, dtype, exact)
        self._local = threading.local()
        registry.load(backend)
        self.weights.context.validate()
        self._sizes = {name: b.size for name, b in plan.buffers.items()}  # for kernels chosen by size (`fits`)
        self.prepared = [self._prepare(s) for s in plan.steps]
        self._output_dtypes = self._head_output_dtypes()

    # -- prepare time ----------------------------------------------------------------------------------
    def _prepare(self, step: Step) -> _Prepared:
        if isinstance(step, Fallback):
            return _prepare_fallback(step, self.weights, self.device)
        choice = registry.choose(step, self.backend_name, self.dtype, self.weights.context, self._sizes)
        return _prepare_with(step, choice, self.weights, self.device, self.dtype)

    def _head_output_dtypes(self) -> dict[str, torch.dtype]:
        """Per-call output buffers written by a Head whose kernel keeps its scores wider than the engine
        dtype (the cpu backend's bf16 heads compute softmax / sigmoid / logits in fp32: `scores_dtype`), so
        they are not rounded to bf16 before the module boundary."""
        out: dict[str, torch.dtype] = {}
        for p in self.prepared:
            wide = None if p.kernel is None else p.kernel.scores_dtype
            if isinstance(p.step, Head) and p.step.op != "argmax" and wide is not None:
                name = p.step.out.buffer
                if name not in self.buffers.offsets and not self.plan.buffers[name].index:
                    out[name] = wide(self.dtype)
        return out

    def records(self, times_ms: list[float] | None = None) -> list[StepRecord]:
        """One StepRecord per plan step, in plan order (`times_ms`: measured per-step times, from profile)."""
        dtype = str(self.dtype).replace("torch.", "")
        out = []
        for i, p in enumerate(self.prepared):
            s = p.step
            reads = tuple(r if isinstance(r, str) else r.describe() for r in getattr(s, "inputs", None) or s.reads())
            writes = tuple(w.describe() for w in s.writes())
            t = None if times_ms is None else times_ms[i]
            if p.kernel is None:
                out.append(StepRecord(i, s.kind, s.name, FALLBACK_KERNEL, "torch", "", dtype, "PyTorch (the model's op)",
                                      "PyTorch", s.reason or "not lowered", (), reads, writes, t))  # type: ignore[attr-defined]  # fmt: skip
                continue
            k, c = p.kernel, p.choice
            assert c is not None
            out.append(StepRecord(i, s.kind, s.name, k.name, k.backend, k.isa, dtype, k.algorithm, k.title,
                                  c.fallback, c.passed_over, reads, writes, t))  # fmt: skip
        return out

    def profile(self, x: Tensor, repeats: int = 3) -> list[float]:
        """Median wall time per plan step in ms over `repeats` runs of `x` (NHWC, engine dtype and device; on
        CUDA each step is synchronized, which the normal run does not do)."""
        times: list[list[float]] = [[] for _ in self.prepared]
        with torch.no_grad():
            for _ in range(max(1, repeats)):
                bufs = self._tensors(x)
                raw: dict[str, Any] = {}
                for i, p in enumerate(self.prepared):
                    if x.device.type == "cuda":
                        torch.cuda.synchronize(x.device)
                    t0 = time.perf_counter()
                    self._run_step(p, bufs, raw)
                    if x.device.type == "cuda":
                        torch.cuda.synchronize(x.device)
                    times[i].append((time.perf_counter() - t0) * 1e3)
        return [sorted(t)[len(t) // 2] for t in times]

    # -- run time --------------------------------------------------------------------------------------
    def _arena(self, batch: int) -> Tensor:
        arenas = getattr(self._local, "arenas", None)
        if arenas is None:
            arenas = self._local.arenas = {}
        a = arenas.get(batch)
        if a is None:
            # a normal tensor even when first called under inference_mode: later calls outside it write to it
            with torch.inference_mode(False):
                a = torch.empty(
                    max(1, batch * self.buffers.arena_per_sample), dtype=self.dtype, device=self.device
                )
            arenas[batch] = a
        return a

    def _tensors(self, x: Tensor) -> dict[str, Tensor]:
        n = x.shape[0]
        arena = self._arena(n)
        if self.poison:
            arena.fill_(float("nan"))
        out: dict[str, Tensor] = {self.plan.input.buffer: x}
        for name, b in self.plan.buffers.items():
            if name in out:
                continue
            shape = b.shape(n)
            if name in self.buffers.offsets:
                off = n * self.buffers.offsets[name]
                numel = n * b.size[0] * b.size[1] * b.channels
                out[name] = arena[off : off + numel].view(shape)
            elif b.index:
                out[name] = torch.empty(shape, dtype=torch.int64, device=self.device)
                if self.poison:
                    out[name].fill_(-1)
            else:
                dtype = self._output_dtypes.get(name, self.dtype)
                out[name] = torch.empty(shape, dtype=dtype, device=self.device)
                if self.poison:
                    out[name].fill_(float("nan"))
        return out

    def run(self, x: Tensor) -> Any:
        """`x`: NHWC [N, H, W, C] in the engine dtype on the engine device. Returns the output of a
        single-output plan (NHWC activation, [N, H, W] class map, or a raw fallback value)."""
        outs = self.run_outputs(x)
        if len(outs) != 1:
            raise ValueError(f"the plan has {len(outs)} outputs: use run_outputs")
        return outs[0]

    def run_outputs(self, x: Tensor) -> list[Any]:
        """Every output of the plan, in plan.outputs order (see `run`)."""
        with torch.no_grad():
            return self._run(x)

    def _run(self, x: Tensor) -> list[Any]:
        bufs = self._tensors(x)
        raw: dict[str, Any] = {}
        for p in self.prepared:
            self._run_step(p, bufs, raw)
        return [raw[o] if isinstance(o, str) else _view(bufs, o) for o in self.plan.outputs]

    def _run_step(self, p: _Prepared, bufs: dict[str, Tensor], raw: dict[str, Any]) -> None:
        s, run = p.step, p.run
        if isinstance(s, Conv):
            run([_input_view(bufs, v) for v in s.inputs], p.weight, p.bias, stride=s.stride,  # type: ignore[misc]
                padding=s.padding, dilation=s.dilation, act=s.act, negative_slope=s.negative_slope,
                residual=None if s.residual is None else _view(bufs, s.residual), out=_view(bufs, s.out),
                pool_out=None if s.pool_out is None else _view(bufs, s.pool_out))  # fmt: skip
        elif isinstance(s, ConvTranspose2x2):
            run(_view(bufs, s.input), p.weight, p.bias, act=s.act, negative_slope=s.negative_slope,  # type: ignore[misc]
                out=_view(bufs, s.out))  # fmt: skip
        elif isinstance(s, Concat):
            run([_input_view(bufs, v) for v in s.inputs], out=_view(bufs, s.out))  # type: ignore[misc]
        elif isinstance(s, Pool):
            run(_view(bufs, s.input), out=_view(bufs, s.out))  # type: ignore[misc]
        elif isinstance(s, Head):
            run(_input_view(bufs, s.input), p.weight, p.bias, s.op, out=_view(bufs, s.out))  # type: ignore[misc]
        elif isinstance(s, Fallback):
            _run_fallback(s, p.weight, bufs, raw)
        else:
            raise AssertionError(f"unknown step {s.kind}")


def _prepare_with(step: Step, choice: registry.Choice, store: WeightStore, dev: torch.device,
                  dtype: torch.dtype) -> _Prepared:  # fmt: skip
    """Pack the step's weight for the chosen kernel (once per kernel and weight: the store's key) and keep
    both with the choice."""
    k = choice.kernel
    p = _Prepared(step, k, choice, run=k.run)
    w = getattr(step, "weight", None)
    if k.pack is not None and w is not None:
        pack = k.pack
        p.weight = store.get(k.name, w, lambda: pack(w.to(dev), dtype))
    b = getattr(step, "bias", None)
    p.bias = None if b is None else store.get("bias", b, lambda: b.to(device=dev, dtype=torch.float32))
    return p


def _prepare_fallback(step: Fallback, store: WeightStore, dev: torch.device) -> _Prepared:
    # constants moved once, not per call (and not in a CUDA graph); a whole-model fallback's module
    # is copied to the device once per store, an ATen call's few constants once per plan
    fn = step.fn
    weight = (store.get("module", fn, lambda: _fn_on_device(fn, dev)) if isinstance(fn, torch.nn.Module)
              else _fn_on_device(fn, dev))  # fmt: skip
    return _Prepared(step, None, weight=weight)


def _view(bufs: dict[str, Tensor], s: Slice) -> Tensor:
    t = bufs[s.buffer]
    if t.dim() == 3:  # class map
        return t
    if s.channel_offset == 0 and s.channels == t.shape[3]:
        return t
    return t[..., s.channel_offset : s.channel_offset + s.channels]


def _input_view(bufs: dict[str, Tensor], s: Slice) -> InputView:
    return InputView(_view(bufs, s), s.resample, s.offset, s.size)


def _fn_on_device(fn: Any, device: torch.device) -> Any:
    """A copy of a fallback callable whose constant tensors (weights, BN statistics) live on `device`."""
    if isinstance(fn, torch.nn.Module):
        return copy.deepcopy(fn).to(device)

    def move(v: Any) -> Any:
        if isinstance(v, Tensor):
            return v.to(device)
        if isinstance(v, (list, tuple)):
            return type(v)(move(e) for e in v)
        if isinstance(v, dict):
            return {k: move(e) for k, e in v.items()}
        return v

    if isinstance(fn, AtenCall):
        return AtenCall(fn.target, move(fn.args), move(fn.kwargs))
    if isinstance(fn, NodeFn):
        n = fn.node
        return NodeFn(Node(n.op, n.inputs, move(n.attrs), n.shape, n.name, n.fused))
    return fn


def _run_fallback(s: Fallback, fn: Any, bufs: dict[str, Tensor], raw: dict[str, Any]) -> None:
    args = []
    for i in s.inputs:
        if isinstance(i, str):
            args.append(raw[i])
        else:
            # fp32 NCHW: PyTorch's own op, at least as precise as the engine dtype
            args.append(spec.to_nchw(spec.read_view(_input_view(bufs, i), torch.float32)))
    result = fn(*args)
    results = [result] if len(s.outputs) == 1 else list(result)
    for o, r in zip(s.outputs, results, strict=True):
        if isinstance(o, str):
            raw[o] = r
        else:
            dst = _view(bufs, o)
            if dst.dim() == 3:
                dst.copy_(r)
            else:
                dst.copy_(spec.to_nhwc(r))
