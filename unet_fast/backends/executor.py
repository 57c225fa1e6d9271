"""The one executor: walks a Plan and calls a kernel module (the backend interface of kernels/spec.py).

Weights come from a WeightStore (backends/weights.py): packed once per (backend, device, dtype) and shared by
the executors of every input shape. Activations live in an arena (graph/planner.py) per thread and batch
size, reused across calls and freed with the thread (threading.local) or with the executor (evicted from the
engine's plan cache); the output is allocated per call.

Which module runs a step is decided when the plan is prepared: a step kind the kernel module lacks, or a step
the backend's `supports(step)` rule turns down (a kernel limit such as the CUDA conv's number of concat
views), runs the torch reference (kernels/spec.py) for that step only, and the report says so. Running never
changes the prepared steps: a kernel that still raises NotImplementedError gets that one call run by the
reference (and the report names it), so threads can share one executor without a lock.
"""

from __future__ import annotations

import copy
import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from unet_fast.backends.base import KERNEL_FUNCTIONS
from unet_fast.backends.weights import WeightStore
from unet_fast.graph.ir import Concat, Conv, ConvTranspose2x2, Fallback, Head, Plan, Pool, Slice, Step
from unet_fast.graph.lower import NodeFn
from unet_fast.graph.opgraph import AtenCall, Node
from unet_fast.graph.planner import BufferPlan
from unet_fast.kernels import spec
from unet_fast.kernels.spec import InputView


@dataclass
class _Prepared:
    step: Step
    kernels: ModuleType  # the module running it (the backend's, or spec as a per-step fallback)
    weight: Any = None
    bias: Tensor | None = None
    note: str = ""  # why the torch reference runs it, if it does


class Executor:
    def __init__(self, plan: Plan, buffers: BufferPlan, kernels: ModuleType, backend_name: str,
                 device: torch.device, dtype: torch.dtype, *, exact: bool = False,
                 weights: WeightStore | None = None,
                 supports: Callable[[Step], str] | None = None) -> None:  # fmt: skip
        """`weights`: the store shared by every plan of one model on this (backend, device, dtype); a private
        one when None. `supports(step)`: '' when the backend's kernels take the step, else why not."""
        self.plan, self.buffers, self.kernels = plan, buffers, kernels
        self.backend_name, self.device, self.dtype = backend_name, device, dtype
        self.exact = exact  # passed to pack_conv_weight where a backend has approximate algorithms
        self.poison = False  # tests: fill buffers with NaN before each run so an unwritten element shows
        self.weights = weights if weights is not None else WeightStore(backend_name, device, dtype, exact)
        self._supports = supports
        self._local = threading.local()
        self._refused: dict[int, str] = {}  # step index -> a kernel's NotImplementedError (report only)
        # the reference's weights for steps a kernel refuses at run time: prepared on the first refusal, then
        # reused by later calls (the store is thread-safe; the shared `weights` are only read when running)
        self._reference_weights = WeightStore("torch", device, dtype)
        self.prepared = [self._prepare(s) for s in plan.steps]
        self._output_dtypes = self._head_output_dtypes()

    # -- prepare time ----------------------------------------------------------------------------------
    def _kernels_for(self, step: Step) -> tuple[ModuleType, str]:
        if isinstance(step, Fallback) or self.kernels is spec:
            return spec, ""
        missing = [f for f in KERNEL_FUNCTIONS[step.kind] if not hasattr(self.kernels, f)]
        if missing:
            return spec, f"{self.backend_name} kernels lack {', '.join(missing)}: torch reference"
        why = self._supports(step) if self._supports is not None else ""
        if why:
            return spec, f"{self.backend_name} kernels do not support this step ({why}): torch reference"
        return self.kernels, ""

    def _prepare(self, step: Step) -> _Prepared:
        km, note = self._kernels_for(step)
        return _prepare_with(step, km, note, self.weights, self.device, self.dtype, self.exact)

    def _head_output_dtypes(self) -> dict[str, torch.dtype]:
        """Per-call output buffers written by a Head whose kernels keep its scores wider than the engine
        dtype (the cpu backend's bf16 head computes softmax / sigmoid / logits in fp32: its
        `head_scores_dtype(dtype)`), so they are not rounded to bf16 before the module boundary."""
        out: dict[str, torch.dtype] = {}
        for p in self.prepared:
            wide = getattr(p.kernels, "head_scores_dtype", None)
            if isinstance(p.step, Head) and p.step.op != "argmax" and wide is not None:
                name = p.step.out.buffer
                if name not in self.buffers.offsets and not self.plan.buffers[name].index:
                    out[name] = wide(self.dtype)
        return out

    def step_notes(self) -> list[str]:
        return [self._refused.get(i, p.note) for i, p in enumerate(self.prepared)]

    def step_algorithms(self) -> list[str]:
        """The kernel module's `step_algorithm(step, dtype, weight)` where it names the step (a bf16 conv's
        path depends on the step's inputs, not only on its packed weight); else a packed weight that names
        its algorithm (the cpu backend's Winograd)."""
        named = getattr(self.kernels, "step_algorithm", None)
        return [(named(p.step, self.dtype, p.weight) if named is not None and p.kernels is self.kernels else "")
                or getattr(p.weight, "algorithm", "")
                for p in self.prepared]  # fmt: skip

    def step_variants(self) -> list[str]:
        """The CPU kernel variant (kernels/cpu_isa.py) each step's packed weight was prepared for, chosen once
        at pack time; '' for steps without a packed weight or on backends without variants."""
        return [getattr(p.weight, "isa", "") for p in self.prepared]

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
        for i, p in enumerate(self.prepared):
            try:
                self._run_step(p, bufs, raw)
            except NotImplementedError as e:
                if p.kernels is spec:
                    raise
                # a limit the backend's supports() did not foresee: this call runs the reference for the
                # step; nothing shared changes (the note is for the report only, a plain dict store)
                self._refused[i] = f"{self.backend_name} kernel refused ({e}): torch reference for this call"
                q = _prepare_with(p.step, spec, "", self._reference_weights, self.device, self.dtype, False)
                self._run_step(q, bufs, raw)
        return [raw[o] if isinstance(o, str) else _view(bufs, o) for o in self.plan.outputs]

    def _run_step(self, p: _Prepared, bufs: dict[str, Tensor], raw: dict[str, Any]) -> None:
        s, km = p.step, p.kernels
        if isinstance(s, Conv):
            km.conv2d([_input_view(bufs, v) for v in s.inputs], p.weight, p.bias, stride=s.stride,
                      padding=s.padding, dilation=s.dilation, act=s.act, negative_slope=s.negative_slope,
                      residual=None if s.residual is None else _view(bufs, s.residual), out=_view(bufs, s.out),
                      pool_out=None if s.pool_out is None else _view(bufs, s.pool_out))  # fmt: skip
        elif isinstance(s, ConvTranspose2x2):
            km.conv_transpose2x2(_view(bufs, s.input), p.weight, p.bias, act=s.act, negative_slope=s.negative_slope,
                                 out=_view(bufs, s.out))  # fmt: skip
        elif isinstance(s, Concat):
            km.upsample_concat([_input_view(bufs, v) for v in s.inputs], out=_view(bufs, s.out))
        elif isinstance(s, Pool):
            km.maxpool2x2(_view(bufs, s.input), out=_view(bufs, s.out))
        elif isinstance(s, Head):
            km.head(_input_view(bufs, s.input), p.weight, p.bias, s.op, out=_view(bufs, s.out))
        elif isinstance(s, Fallback):
            _run_fallback(s, p.weight, bufs, raw)
        else:
            raise AssertionError(f"unknown step {s.kind}")


def _prepare_with(step: Step, km: ModuleType, note: str, store: WeightStore, dev: torch.device,
                  dtype: torch.dtype, exact: bool) -> _Prepared:  # fmt: skip
    p = _Prepared(step, km, note=note)
    role = "spec" if km is spec else "kernels"  # the reference and the backend pack differently
    if isinstance(step, Conv):
        kw = {"exact": True} if exact and "exact" in inspect.signature(km.pack_conv_weight).parameters else {}
        p.weight = store.get(f"conv-{role}", step.weight,
                             lambda: km.pack_conv_weight(step.weight.to(dev), dtype, **kw))  # fmt: skip
    elif isinstance(step, ConvTranspose2x2):
        p.weight = store.get(f"convT-{role}", step.weight,
                             lambda: km.pack_conv_transpose_weight(step.weight.to(dev), dtype))  # fmt: skip
    elif isinstance(step, Head):
        p.weight = store.get(f"head-{role}", step.weight, lambda: km.pack_head_weight(step.weight.to(dev), dtype))
    elif isinstance(step, Fallback):
        # constants moved once, not per call (and not in a CUDA graph); a whole-model fallback's module
        # is copied to the device once per store, an ATen call's few constants once per plan
        fn = step.fn
        p.weight = (store.get("module", fn, lambda: _fn_on_device(fn, dev)) if isinstance(fn, torch.nn.Module)
                    else _fn_on_device(fn, dev))  # fmt: skip
    b = getattr(step, "bias", None)
    p.bias = None if b is None else store.get("bias", b, lambda: b.to(device=dev, dtype=torch.float32))
    return p


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
