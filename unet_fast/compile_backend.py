"""`torch.compile(model, backend="unet_fast")`: the graphs TorchDynamo hands over run on the fused engine.

Registered through the `torch_dynamo_backends` entry point (pyproject.toml), as OpenVINO and Torch-TensorRT
register theirs, so the name works once the package is installed; `unet_fast_backend` can also be passed
directly (`torch.compile(model, backend=unet_fast.compile_backend.unet_fast_backend)`).

What Dynamo gives a backend is an FX graph whose placeholders are the user's tensor input, the model's
parameters and buffers (marked static by Dynamo) and, for dynamic shapes, the input's sizes as SymInts.
`_bind` turns it into a one-input module (parameters and buffers bound, sizes read off the input), which
`unet_fast.optimize` captures like any model; the returned callable runs the FusedUNet.

Where it differs from `optimize` (docs/compile_backend.md):
- weights are frozen when a graph is compiled, like Inductor with `freezing=True` or OpenVINO's backend: a
  later in-place change of a parameter (an optimizer step, `load_state_dict`) is noticed on the next call
  (tensor version counters and data pointers, a few microseconds) and the graph is optimized again, with a
  warning;
- a call that needs gradients (grad mode on and an input or parameter requiring grad) runs Dynamo's graph
  eagerly: the engine computes inference only;
- what the engine cannot take (several tensor inputs, a training-mode graph, a capture error) runs Dynamo's
  graph eagerly, or through Inductor with `options={"fallback": "inductor"}`, with a `UnetFastFallback`
  warning naming the reason; `reports()` lists every graph compiled and what runs it;
- Dynamo's default "automatic dynamic" compiles the first input size statically and a second graph with
  dynamic sizes when a size changes (two captures); `torch.compile(..., dynamic=True)` gives one graph,
  hence one capture and one plan for every size.
"""

from __future__ import annotations

import copy
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["CompiledGraph", "UnetFastFallback", "reports", "unet_fast_backend"]

# optimize() arguments a user may pass through `torch.compile(..., options={...})`
_ENGINE_OPTIONS = ("backend", "dtype", "exact", "check_finite", "max_cached_shapes", "cuda_graphs")
_FALLBACKS = ("eager", "inductor")


class UnetFastFallback(UserWarning):
    """A graph (or one call) that the engine does not run; the message names the reason."""


@dataclass
class CompiledGraph:
    """What `unet_fast_backend` made of one Dynamo graph (reports as data; `report` renders the engine's)."""

    graph_id: int
    engine: bool  # True: the FusedUNet runs it; False: the fallback does
    reason: str  # why the fallback runs it ("" when the engine does)
    input_shape: tuple[Any, ...]  # the example input's shape (sizes Dynamo made dynamic shown as names)
    fused: Any = None  # the FusedUNet, when engine is True
    recompiles: int = 0  # times the weights changed and the graph was optimized again

    def report(self) -> str:
        return self.fused.report() if self.fused is not None else f"not on the engine: {self.reason}"


_REPORTS: list[CompiledGraph] = []
_LOCK = threading.Lock()


def reports() -> list[CompiledGraph]:
    """Every graph compiled by this backend in this process, oldest first."""
    with _LOCK:
        return list(_REPORTS)


def _record(rec: CompiledGraph) -> CompiledGraph:
    with _LOCK:
        rec.graph_id = len(_REPORTS)
        _REPORTS.append(rec)
    return rec


# -- the graph Dynamo hands over -> a one-input module -------------------------------------------------
@dataclass
class _Slots:
    """Where each of the graph's inputs comes from: the user tensor (index `x`), one of its sizes, or a
    bound parameter / buffer."""

    x: int
    sizes: dict[int, int]  # graph input index -> dimension of x it is
    params: dict[int, Tensor]  # graph input index -> the model's tensor (the live object, not a copy)
    scalars: dict[int, float | int]  # graph input index -> a Python number Dynamo passes as a 0-d tensor


def _source_of(node: torch.fx.Node) -> Any:
    ga = node.meta.get("grapharg")
    return getattr(ga, "source", None)


def _name(source: Any) -> str:
    """A Dynamo source's name (`name` is a method in some torch versions, a property in others)."""
    n = getattr(source, "name", None)
    return str(n() if callable(n) else n)


def _is_unspecialized_scalar(node: torch.fx.Node) -> bool:
    """A Python float attribute (BatchNorm's eps and momentum, say) that Dynamo passes as a 0-d tensor
    (`specialize_float=False`): its value is read back with `.item()`, which torch.export cannot trace as
    a size-free value. Bound as a number instead; `run` checks the number each call."""
    return bool(node.meta.get("grapharg") is not None and getattr(node.meta["grapharg"], "pass_arg_as_tensor", False))


def _classify(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> _Slots | str:
    """The slots of `gm`'s inputs, or why the engine cannot take the graph."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(example_inputs):
        return f"the graph has {len(placeholders)} inputs but Dynamo gave {len(example_inputs)} examples"
    users: list[int] = []
    params: dict[int, Tensor] = {}
    scalars: dict[int, float | int] = {}
    size_nodes: dict[int, Any] = {}
    for i, (node, ex) in enumerate(zip(placeholders, example_inputs, strict=True)):
        if isinstance(ex, Tensor) and _is_unspecialized_scalar(node):
            scalars[i] = ex.item()
        elif isinstance(ex, Tensor):
            # the caller's arguments are plain locals (L['x']); the model's parameters and buffers (and any
            # tensor read from an attribute or a global) are reached through another object: bound
            if type(_source_of(node)).__name__ == "LocalSource":
                users.append(i)
            else:
                params[i] = ex
        elif isinstance(ex, (int, torch.SymInt)) and not isinstance(ex, bool):
            size_nodes[i] = _source_of(node)
        else:
            return f"graph input {node.name} is a {type(ex).__name__}, not a tensor or a size"
    if len(users) != 1:
        return f"the graph takes {len(users)} input tensors; the engine takes one (N, C, H, W) tensor"
    x = users[0]
    xt = example_inputs[x]
    if xt.dim() != 4 or not xt.is_floating_point():
        return f"the graph's input is a {xt.dim()}-D {xt.dtype} tensor; the engine takes a 4-D float tensor"
    x_source = _source_of(placeholders[x])
    sizes: dict[int, int] = {}
    for i, src in size_nodes.items():
        # a SymInt input is `x.size()[d]` (TensorPropertySource on x); anything else cannot be derived from x
        base, idx = getattr(src, "base", None), getattr(src, "idx", None)
        prop = str(getattr(src, "prop", ""))
        if base is None or idx is None or "SIZE" not in prop.upper() or x_source is None or \
                _name(base) != _name(x_source):  # fmt: skip
            name = _name(src) if src is not None else placeholders[i].name
            return f"graph input {placeholders[i].name} is the integer {name}, not a size of the input tensor"
        sizes[i] = int(idx)
    return _Slots(x, sizes, params, scalars)


def _training_reason(gm: torch.fx.GraphModule) -> str:
    """A training-mode graph (batch statistics, dropout): the engine folds eval-mode BN, so it refuses."""
    import torch.nn.functional as F

    checks = {F.batch_norm: 5, F.dropout: 2, F.dropout2d: 2, F.alpha_dropout: 2}  # position of `training`
    for n in gm.graph.nodes:
        pos = checks.get(n.target) if n.op == "call_function" else None
        if pos is None:
            continue
        flag = n.kwargs.get("training", n.args[pos] if len(n.args) > pos else False)
        if flag is True:
            return f"the graph runs {n.target.__name__}(training=True) (the model is in training mode)"
    return ""


def _fold_scalars(gm: torch.fx.GraphModule, scalars: dict[int, float | int]) -> torch.fx.GraphModule:
    """A copy of `gm` in which each `.item()` of a scalar input is its value (Dynamo's graph is left as it
    is: the eager fallback and the gradient path run it)."""
    graph = copy.deepcopy(gm.graph)
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    for i, value in scalars.items():
        for user in list(placeholders[i].users):
            if user.op == "call_method" and user.target == "item":
                user.replace_all_uses_with(value)  # type: ignore[arg-type]
                graph.erase_node(user)
    graph.lint()
    return torch.fx.GraphModule(gm, graph)


class _Bound(nn.Module):
    """Dynamo's graph as a one-input module: parameters and buffers bound (the same tensor objects, so the
    engine's capture folds the model's current values), sizes read off the input."""

    def __init__(self, gm: torch.fx.GraphModule, slots: _Slots, n_inputs: int) -> None:
        super().__init__()
        self.gm = _fold_scalars(gm, slots.scalars)
        self._slots = slots
        self._n = n_inputs
        for i, t in slots.params.items():
            self.register_buffer(f"p{i}", t.detach(), persistent=False)
        self.eval()

    def forward(self, x: Tensor) -> Any:
        args: list[Any] = []
        for i in range(self._n):
            if i == self._slots.x:
                args.append(x)
            elif i in self._slots.sizes:
                args.append(x.shape[self._slots.sizes[i]])
            elif i in self._slots.scalars:
                args.append(torch.tensor(self._slots.scalars[i], dtype=torch.float64))  # only if not folded
            else:
                args.append(getattr(self, f"p{i}"))
        out = self.gm(*args)
        # Dynamo's graphs return a tuple; a single tensor is unpacked so the engine's head fusion sees it
        return out[0] if isinstance(out, (tuple, list)) and len(out) == 1 else out


def _stamp(slots: _Slots, args: Sequence[Any]) -> tuple:
    """What the engine folded from this call's bound inputs: each tensor's version counter and data pointer
    (an in-place write or `p.data = ...` changes them) and each scalar's value."""
    tensors = tuple((args[i]._version, args[i].data_ptr()) for i in slots.params)
    return tensors + tuple(float(args[i]) for i in slots.scalars)


def _needs_grad(args: Sequence[Any]) -> bool:
    return torch.is_grad_enabled() and any(isinstance(a, Tensor) and a.requires_grad for a in args)


def _fallback(gm: torch.fx.GraphModule, example_inputs: Sequence[Any], how: str) -> Callable[..., Any]:
    if how == "inductor":
        from torch._inductor.compile_fx import compile_fx

        return compile_fx(gm, list(example_inputs))
    return gm.forward


def _shape_of(t: Tensor) -> tuple[Any, ...]:
    return tuple(int(s) if not isinstance(s, torch.SymInt) else str(s) for s in t.shape)


def unet_fast_backend(gm: torch.fx.GraphModule, example_inputs: list[Any], *,
                      options: dict[str, Any] | None = None) -> Callable[..., Any]:  # fmt: skip
    """A TorchDynamo backend: run `gm` on a FusedUNet (unet_fast.optimize), or fall back with the reason.

    gm / example_inputs: what Dynamo passes (an FX graph over the user's (N, C, H, W) float input, the
        model's parameters and buffers, and SymInt sizes when shapes are dynamic).
    options (`torch.compile(..., options={...})`): any of optimize()'s `backend`, `dtype`, `exact`,
        `check_finite`, `max_cached_shapes`, `cuda_graphs`; and `fallback`: "eager" (default) or
        "inductor", what runs a graph the engine cannot take. `output` is always "model": the compiled
        model returns what the model returns.
    Returns the callable Dynamo runs in place of `gm` (same inputs, same outputs). Raises ValueError for an
    unknown option; what the engine refuses is not an error (UnetFastFallback warning, `reports()`).
    """
    import unet_fast  # the engine (a late import: this module is loaded by torch's entry-point lookup)

    opts = dict(options or {})
    how = opts.pop("fallback", "eager")
    if how not in _FALLBACKS:
        raise ValueError(f"options['fallback']={how!r} is not one of {_FALLBACKS}")
    unknown = sorted(set(opts) - set(_ENGINE_OPTIONS))
    if unknown:
        raise ValueError(f"unknown unet_fast options {unknown}; choose from {(*_ENGINE_OPTIONS, 'fallback')}")

    slots = _classify(gm, example_inputs)
    why = slots if isinstance(slots, str) else _training_reason(gm)
    shape = _shape_of(example_inputs[slots.x]) if not isinstance(slots, str) else ()
    if why:
        rec = _record(CompiledGraph(0, False, why, shape))
        warnings.warn(f"unet_fast: graph {rec.graph_id} runs on {how}: {why}", UnetFastFallback, stacklevel=2)
        return _fallback(gm, example_inputs, how)
    assert not isinstance(slots, str)

    def build(args: Sequence[Any]) -> Any:
        # the live tensors and current scalar values of this call are what the engine folds
        now = _Slots(slots.x, slots.sizes, {i: args[i] for i in slots.params},
                     {i: float(args[i]) for i in slots.scalars})  # fmt: skip
        bound = _Bound(gm, now, len(example_inputs))
        return unet_fast.optimize(bound, args[slots.x].detach(), output="model", **opts)

    # The engine is built at the first call, outside Dynamo's compilation: torch.export inside a Dynamo
    # compile shares its tracing context and adds guards to the frame being compiled.
    rec = _record(CompiledGraph(0, True, "", shape))
    state: dict[str, Any] = {"stamp": None, "warned_grad": False, "eager": None}
    lock = threading.Lock()

    def first(args: Sequence[Any]) -> None:
        try:
            rec.fused = build(args)
        except Exception as e:  # any refusal of the engine (capture error, unsupported dtype...): the fallback
            rec.engine, rec.reason = False, f"{type(e).__name__}: {e}"
            warnings.warn(f"unet_fast: graph {rec.graph_id} runs on {how}: {rec.reason}", UnetFastFallback,
                          stacklevel=3)  # fmt: skip
            state["eager"] = _fallback(gm, example_inputs, how)
        state["stamp"] = _stamp(slots, args)

    @torch._dynamo.disable
    def run(*args: Any) -> Any:
        if _needs_grad(args):
            if not state["warned_grad"]:
                state["warned_grad"] = True
                warnings.warn(f"unet_fast: graph {rec.graph_id}: a call that needs gradients runs eagerly "
                              "(the engine computes inference only)", UnetFastFallback, stacklevel=2)  # fmt: skip
            return gm.forward(*args)
        with lock:
            if state["stamp"] is None:
                first(args)
            elif rec.fused is not None and _stamp(slots, args) != state["stamp"]:
                warnings.warn(f"unet_fast: graph {rec.graph_id}: the model's weights changed since it was "
                              "compiled; optimizing it again", UnetFastFallback, stacklevel=2)  # fmt: skip
                rec.fused = build(args)
                rec.recompiles += 1
                state["stamp"] = _stamp(slots, args)
        if state["eager"] is not None:
            return state["eager"](*args)
        out = rec.fused(args[slots.x])
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)

    return run
