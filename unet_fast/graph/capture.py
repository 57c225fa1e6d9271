"""Capture: torch.export a model, then normalise the ATen graph into an OpGraph.

`capture_dynamic` exports once with a dynamic batch, height and width (torch.export.Dim.AUTO): every size in the
graph (node shapes, pad amounts, crop offsets, resample targets) is then a sympy expression of the input's
(N, H, W) symbols, which graph/symbolic.py evaluates for a concrete input shape in microseconds. `capture`
exports at one static shape (the fallback when a dynamic export fails).

Known ATen patterns become the small op vocabulary of graph/opgraph.py; anything else becomes a `fallback`
node that calls the same ATen op, so an unknown layer costs speed, never correctness.

Mutation (issue 23): torch.export's graph keeps in-place ops as they were written (`y[:, 1:2] = 0` is a
`slice` view and a `fill_` with no users). The OpGraph is a graph of values, so every write must become a
value: an in-place op on a fresh value that nothing reads afterwards through another name (`relu_` after a
conv, a residual `+=`) is its out-of-place twin (`relu`, `add`); any other write (through a view, on a
value read again later, on the input, on a buffer) makes the capture functionalize the program first
(`ExportedProgram.run_decompositions({})`: writes become `slice_scatter` / `select_scatter` / `copy` /
`index_put` values, decomposing nothing else). After that the graph has no write left, or the model is
refused: a write into a buffer or parameter (a running counter) is a CaptureError naming it, and a write into
the input is an extra output the engine writes back into the caller's tensor (OpGraph.input_update).

Outputs: the model's return value may be any pytree of tensors and constants (`(y,)`, `{"out": y, "aux": a}`,
a deep-supervision list); its structure (the export's out_spec) is kept in OpGraph.tree.
"""

from __future__ import annotations

import operator
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.fx import Node as FxNode

from unet_fast.graph.opgraph import AtenCall, Const, Node, OpGraph, OutputTree, _Ref
from unet_fast.graph.quiet import quiet_torch_logs
from unet_fast.model_guard import TrainingModeError, training_mode_problems

aten = torch.ops.aten

_ACTS = {
    aten.relu.default: "relu",
    aten.relu_.default: "relu",
    aten.silu.default: "silu",
    aten.silu_.default: "silu",
    aten.leaky_relu.default: "leaky_relu",
    aten.leaky_relu_.default: "leaky_relu",
}
_IDENTITY = {aten.clone.default, aten.contiguous.default, aten.alias.default, aten.detach.default,
             aten.detach_.default, aten.lift_fresh_copy.default}  # fmt: skip
# Ops whose fallback does not bake the batch size into its arguments: a plan with only these fallbacks is
# reused for any batch without re-capture.
BATCH_AGNOSTIC_FALLBACKS = {
    "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "mul", "sub", "div", "add", "relu", "sigmoid",
    "softmax", "_softmax", "argmax", "tanh", "gelu", "hardtanh", "hardswish", "batch_norm", "conv2d",
    "convolution", "conv_transpose2d", "cat", "pad", "constant_pad_nd", "upsample_nearest2d",
    "upsample_bilinear2d", "max_pool2d_with_indices", "getitem", "_native_batch_norm_legit_no_training",
    "mean", "leaky_relu", "silu", "elu", "clamp", "abs", "exp", "log",
}  # fmt: skip


class CaptureError(ValueError):
    pass


def check_eval_mode(model: nn.Module) -> None:
    """Refuse a model whose result depends on its training mode (TrainingModeError, a ValueError): the root
    module in training mode, or a BatchNorm, an InstanceNorm with running statistics or a Dropout in
    training mode; the message names each module and what goes wrong for it (model_guard)."""
    problems = training_mode_problems(model)
    if problems:
        kinds: dict[str, list[str]] = {}
        for name, why in problems:
            kinds.setdefault(why, []).append(name)
        parts = [f"{', '.join(names[:5])}{f' ... ({len(names)} in all)' if len(names) > 5 else ''}: {why}"
                 for why, names in kinds.items()]  # fmt: skip
        raise TrainingModeError(
            f"the model is in training mode ({'; '.join(parts)}). Call model.eval() before unet_fast.optimize(...)",
            problems,
        )


def export(model: nn.Module, example: Tensor) -> torch.export.ExportedProgram:
    check_eval_mode(model)
    with quiet_torch_logs(), torch.no_grad():
        return functional(torch.export.export(model, (example,), strict=False))


def export_dynamic(model: nn.Module, example: Tensor) -> torch.export.ExportedProgram:
    """torch.export with batch, height and width dynamic (Dim.AUTO: sizes the model's code branches on become
    guards, see ExportedProgram._guards_code, instead of errors). A size of 1 would be specialised (0/1
    specialisation), so the example's batch is made 2."""
    check_eval_mode(model)
    if example.shape[0] == 1:
        example = example.expand(2, *example.shape[1:]).contiguous()
    auto = torch.export.Dim.AUTO
    with quiet_torch_logs(), torch.no_grad():  # a size the model cannot take: our error says it, once
        ep = torch.export.export(model, (example,), dynamic_shapes=({0: auto, 2: auto, 3: auto},), strict=False)
        return functional(ep)


def _writes(op: Any) -> bool:
    """Whether an ATen op writes into one of its arguments (its schema marks it `Tensor(a!)`)."""
    schema = getattr(op, "_schema", None)
    return schema is not None and any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments)


def _is_view(op: Any) -> bool:
    return bool(getattr(op, "is_view", False))


def out_of_place(op: Any) -> Any:
    """The out-of-place twin of an in-place ATen op (`aten.relu_.default` -> `aten.relu.default`), None where
    there is none; an op that writes nothing is returned as it is."""
    if not _writes(op):
        return op
    name = op._schema.name.split("::")[-1]
    if not name.endswith("_") or op._schema.arguments[0].alias_info is None:
        return None
    twin = getattr(getattr(aten, name[:-1], None), op._overloadname, None)
    return twin if twin is not None and not _writes(twin) else None


def unsafe_writes(graph: torch.fx.Graph) -> list[str]:
    """The in-place ops of an export graph that are NOT equivalent to their out-of-place twin on the value
    they write: a write into a placeholder (the input, a parameter, a buffer), into a view, into a value that
    has a view or is read after the write under its old name, into an argument other than the first, or an op
    without an out-of-place twin. Empty: every write can be read as a value op."""
    order = {n: i for i, n in enumerate(graph.nodes)}
    bad = []
    for n in graph.nodes:
        if n.op != "call_function" or not _writes(n.target):
            continue
        a = n.args[0] if n.args else None
        if out_of_place(n.target) is None or not isinstance(a, FxNode):
            bad.append(f"{n.name} ({n.target})")
            continue
        # the written value and the values it aliases through earlier in-place ops (relu_(add_(conv)))
        chain = [a]
        while chain[-1].op == "call_function" and _writes(chain[-1].target) and chain[-1].args:
            chain.append(chain[-1].args[0])
        base = chain[-1]
        if base.op != "call_function" or _is_view(base.target):
            bad.append(f"{n.name} ({n.target} into {base.name})")
            continue
        for v in chain:
            if any(_is_view(u.target) for u in v.users if u.op == "call_function"):
                bad.append(f"{n.name} ({n.target} into {v.name}, which has a view)")
                break
        else:
            if any(order[u] > order[n] for u in a.users if u is not n):
                bad.append(f"{n.name} ({n.target} into {a.name}, read again after the write)")
    return bad


def functional(ep: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """`ep` when every write in it can be read as a value op (unsafe_writes is empty: the common in-place
    activations and residual adds), else its functionalized form (run_decompositions with an empty table:
    writes become values, nothing else is decomposed). Raises CaptureError when a write is left."""
    if not unsafe_writes(ep.graph):
        return ep
    with warnings.catch_warnings():
        # torch 2.13 deep-copies pytree specs here and warns about its own deprecated LeafSpec check
        warnings.simplefilter("ignore", FutureWarning)
        ep = ep.run_decompositions({})
    left = unsafe_writes(ep.graph)  # functionalization leaves none; a torch that did would be refused here
    if left:
        raise CaptureError(f"the model writes in place in a way the engine cannot turn into values: "
                           f"{', '.join(left[:5])}")  # fmt: skip
    return ep


def capture(model: nn.Module, example: Tensor) -> OpGraph:
    """Export `model` at `example`'s shape and normalise it. Raises ValueError for training mode."""
    try:
        ep = export(model, example)
    except ValueError:
        raise
    except Exception as e:
        return whole_model_fallback(model, example, f"torch.export failed: {type(e).__name__}: {e}"[:300])
    return from_exported(ep)


def capture_dynamic(model: nn.Module, example: Tensor) -> tuple[OpGraph, list[str]]:
    """One shape-generic capture: (graph whose sizes are sympy expressions, guard expressions as Python source
    over `L['x'].size()`). Raises what torch.export raises (the caller falls back to a static capture)."""
    ep = export_dynamic(model, example)
    return from_exported(ep), list(getattr(ep, "_guards_code", []) or [])


def whole_model_fallback(model: nn.Module, example: Tensor, reason: str) -> OpGraph:
    with torch.no_grad():
        out = model(example)
    x = Node("input", [], {}, tuple(example.shape), "x")
    shape = (
        tuple(out.shape) if isinstance(out, Tensor) and out.dim() == 4 and out.is_floating_point() else None
    )
    fb = Node(
        "fallback", [x], {"fn": model, "reason": reason, "target": type(model).__name__}, shape, "model"
    )
    return OpGraph([x, fb], x, fb)


def _size(s: Any) -> Any:
    """An int, or the sympy expression of a symbolic size (never guarded on: int() of a SymInt would
    specialise the capture to the example's size)."""
    if isinstance(s, torch.SymInt):
        e = s.node.expr
        return int(e) if e.is_Integer else e
    return int(s)


def _tensor_shape(fx: FxNode) -> tuple[Any, ...] | None:
    v = fx.meta.get("val")
    if isinstance(v, Tensor) and v.dim() == 4 and v.is_floating_point():
        return tuple(_size(s) for s in v.shape)
    return None


def _is_size_value(fx: FxNode) -> bool:
    """sym_size / floordiv / sub ... nodes computing a (symbolic) integer: kept as expressions, not ops."""
    v = fx.meta.get("val")
    return isinstance(v, (torch.SymInt, int)) and not isinstance(v, bool)


def from_exported(ep: torch.export.ExportedProgram) -> OpGraph:
    """Normalise an ExportedProgram (from `export` / `export_dynamic`, so without unsafe writes) into an
    OpGraph. Raises CaptureError for what the engine cannot take: several inputs, a non-4-D or integer input,
    a forward that writes into a buffer or parameter, a write that could not be made a value."""
    sig = ep.graph_signature
    state = dict(ep.state_dict)
    state.update({k: v for k, v in ep.constants.items() if isinstance(v, Tensor)})
    lifted = {**sig.inputs_to_parameters, **sig.inputs_to_buffers, **sig.inputs_to_lifted_tensor_constants}
    user_inputs = [n for n in ep.graph.nodes if n.op == "placeholder" and n.name not in lifted]
    if len(user_inputs) != 1:
        raise CaptureError(f"the model must take exactly one tensor input, it takes {len(user_inputs)}")
    _refuse_state_writes(ep)

    env: dict[FxNode, Any] = {}  # fx node -> Node (activation/raw) or a constant tensor
    nodes: list[Node] = []
    out_args: list[Any] = []
    for fx in ep.graph.nodes:
        if fx.op == "placeholder":
            if fx.name in lifted:
                env[fx] = state[lifted[fx.name]].detach()
            else:
                shape = _tensor_shape(fx)
                if shape is None:
                    raise CaptureError(
                        f"the model input must be a 4-D float tensor, got {fx.meta.get('val')}"
                    )
                env[fx] = Node("input", [], {}, shape, fx.name)
                nodes.append(env[fx])
        elif fx.op == "get_attr":
            env[fx] = getattr(ep.graph_module, str(fx.target))
        elif fx.op == "call_function" and _is_size_value(fx):
            env[fx] = _size(fx.meta["val"])
        elif fx.op == "call_function":
            node = _convert(fx, env)
            env[fx] = node
            if isinstance(node, Node) and all(node is not n for n in nodes):
                nodes.append(node)
        elif fx.op == "output":
            out_args = list(fx.args[0]) if isinstance(fx.args[0], (list, tuple)) else [fx.args[0]]
    g = OpGraph(nodes, env[user_inputs[0]], [])
    _outputs(ep, g, env, out_args)
    g.prune()
    return g


def _refuse_state_writes(ep: torch.export.ExportedProgram) -> None:
    from torch.export.graph_signature import OutputKind

    written = [s.target for s in ep.graph_signature.output_specs
               if s.kind in (OutputKind.BUFFER_MUTATION, OutputKind.PARAMETER_MUTATION)]  # fmt: skip
    if written:
        raise CaptureError(
            f"the model's forward writes into its buffer(s) or parameter(s) {', '.join(map(repr, written))} (a "
            "running counter or statistic updated per call): the engine takes buffers as constants and would "
            "return results as if the update never happened. Remove the update from forward() (or run the "
            "model eagerly)"
        )


def _outputs(ep: torch.export.ExportedProgram, g: OpGraph, env: dict[FxNode, Any], args: list[Any]) -> None:
    """Fill g.outputs, g.tree and g.input_update from the export's output specs and out_spec."""
    from torch.export.graph_signature import OutputKind

    specs = ep.graph_signature.output_specs
    if len(specs) != len(args):
        raise CaptureError(f"the export's output specs ({len(specs)}) do not match its outputs ({len(args)})")
    index: dict[int, int] = {}  # id(Node) -> index into g.outputs, so `return y, y` computes y once
    leaves: list[int | Const] = []
    for spec, arg in zip(specs, args, strict=True):
        if spec.kind == OutputKind.USER_INPUT_MUTATION:
            g.outputs.append(_output_node(env, arg, "the model's new input value"))
            g.input_update = len(g.outputs) - 1
            continue
        if spec.kind != OutputKind.USER_OUTPUT:
            raise CaptureError(f"the exported program has an output of kind {spec.kind.name}, which an "
                               "inference engine cannot reproduce")  # fmt: skip
        if not isinstance(arg, FxNode):
            leaves.append(Const(arg))
            continue
        value = env[arg]
        if not isinstance(value, Node):
            if isinstance(value, Tensor):
                raise CaptureError(f"the model returns a constant tensor ({arg.name}); the engine returns "
                                   "computed tensors only")  # fmt: skip
            leaves.append(Const(value))  # a size (int or sympy expression of the input sizes)
            continue
        if id(value) not in index:
            g.outputs.append(value)
            index[id(value)] = len(g.outputs) - 1
        leaves.append(index[id(value)])
    out_spec = ep.call_spec.out_spec
    if out_spec is None or (out_spec.num_leaves == 1 and out_spec.is_leaf() and g.input_update is None
                            and len(g.outputs) == 1):  # fmt: skip
        if len(g.outputs) != 1 or leaves != [0]:
            raise CaptureError(f"the model must return a tensor, it returns {leaves}")
        return  # a bare tensor: tree None
    g.tree = OutputTree(out_spec, leaves)
    if not g.result_indices():
        raise CaptureError("the model returns no tensor")


def _output_node(env: dict[FxNode, Any], arg: Any, what: str) -> Node:
    value = env.get(arg) if isinstance(arg, FxNode) else None
    if not isinstance(value, Node):
        raise CaptureError(f"{what} is not a tensor the engine computes ({arg})")
    return value


def _arg(fx: FxNode, i: int, name: str, default: Any = None) -> Any:
    if len(fx.args) > i:
        return fx.args[i]
    return fx.kwargs.get(name, default)


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    v = list(v)
    return (int(v[0]), int(v[0] if len(v) == 1 else v[1]))


class _BatchNormResult:
    """`_native_batch_norm_legit_no_training` returns (out, mean, invstd) (what a functionalized export writes
    for an eval-mode BatchNorm): item 0 is the batch_norm node; the others, never used in eval mode, run the
    ATen op as a fallback if something reads them."""

    def __init__(self, fx: FxNode, node: Node) -> None:
        self.fx, self.node = fx, node


@dataclass(frozen=True)
class _Item:
    """`op(*args)[index]`: one result of a multi-output ATen op, as a picklable fallback callable."""

    op: Any
    index: int

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.op(*args, **kwargs)[self.index]

    @property
    def __name__(self) -> str:  # the report names the op
        return f"{getattr(self.op, '__name__', self.op)}[{self.index}]"


def _convert(fx: FxNode, env: dict[FxNode, Any]) -> Any:
    # a write that unsafe_writes let through is its out-of-place twin on a value nothing else reads
    t = out_of_place(fx.target) if _writes(fx.target) else fx.target
    shape = _tensor_shape(fx)

    def resolve(v: Any) -> Any:
        if isinstance(v, FxNode):
            return env[v]
        if isinstance(v, (list, tuple)):
            return type(v)(resolve(e) for e in v)
        return v

    def val(i: int, name: str, default: Any = None) -> Any:
        return resolve(_arg(fx, i, name, default))

    def node(op: str, inputs: list[Node], **attrs: Any) -> Node:
        return Node(op, inputs, attrs, shape, fx.name)

    x = val(0, "input")
    try:
        if t is operator.getitem and isinstance(x, _BatchNormResult):
            i = int(_arg(fx, 1, "idx"))
            if i == 0:
                return x.node
            return _fallback(fx, env, shape, inner=x.fx, target=_Item(x.fx.target, i))
        if t in _IDENTITY and isinstance(x, Node):
            return x
        if t is aten.dropout.default and not val(2, "train") and isinstance(x, Node):
            return x
        if t in (aten.conv2d.default, aten.convolution.default) and isinstance(x, Node) and x.shape and shape:
            w, b = val(1, "weight"), val(2, "bias")
            transposed = t is aten.convolution.default and bool(val(6, "transposed"))
            if isinstance(w, Tensor) and (b is None or isinstance(b, Tensor)) and not transposed:
                groups = val(8, "groups", 1) if t is aten.convolution.default else val(6, "groups", 1)
                return node("conv", [x], weight=w.float(), bias=None if b is None else b.float(),
                            stride=_pair(val(3, "stride", 1)), padding=_pair(val(4, "padding", 0)),
                            dilation=_pair(val(5, "dilation", 1)), groups=int(groups), act="none",
                            negative_slope=0.01, residual=False)  # fmt: skip
        if t is aten.conv_transpose2d.input and isinstance(x, Node) and x.shape and shape:
            w, b = val(1, "weight"), val(2, "bias")
            if isinstance(w, Tensor) and (b is None or isinstance(b, Tensor)):
                return node("conv_transpose", [x], weight=w.float(), bias=None if b is None else b.float(),
                            stride=_pair(val(3, "stride", 1)), padding=_pair(val(4, "padding", 0)),
                            output_padding=_pair(val(5, "output_padding", 0)), groups=int(val(6, "groups", 1)),
                            dilation=_pair(val(7, "dilation", 1)), act="none", negative_slope=0.01)  # fmt: skip
        if t is aten.batch_norm.default and shape:
            if val(5, "training"):
                raise TrainingModeError(f"BatchNorm {fx.name} runs in training mode (batch statistics); "
                                        "call model.eval() first", [(fx.name, "batch statistics")])  # fmt: skip
            eps = val(7, "eps")
            mean, var = val(3, "running_mean"), val(4, "running_var")
            gamma, beta = val(1, "weight"), val(2, "bias")
            if isinstance(x, Node) and isinstance(mean, Tensor) and isinstance(var, Tensor):
                return node("batch_norm", [x], mean=mean.float(), var=var.float(),
                            gamma=None if gamma is None else gamma.float(),
                            beta=None if beta is None else beta.float(), eps=float(eps))  # fmt: skip
        if t is aten._native_batch_norm_legit_no_training.default and isinstance(x, Node):
            v = fx.meta.get("val")
            out = v[0] if isinstance(v, (list, tuple)) and v else None
            mean, var = val(3, "running_mean"), val(4, "running_var")
            gamma, beta = val(1, "weight"), val(2, "bias")
            if isinstance(out, Tensor) and out.dim() == 4 and isinstance(mean, Tensor) and isinstance(var, Tensor):
                bn = Node("batch_norm", [x], {"mean": mean.float(), "var": var.float(),
                                              "gamma": None if gamma is None else gamma.float(),
                                              "beta": None if beta is None else beta.float(),
                                              "eps": float(val(6, "eps"))},
                          tuple(_size(d) for d in out.shape), fx.name)  # fmt: skip
                return _BatchNormResult(fx, bn)
        if t in _ACTS and isinstance(x, Node) and shape:
            slope = float(val(1, "negative_slope", 0.01)) if _ACTS[t] == "leaky_relu" else 0.01
            return node("act", [x], kind=_ACTS[t], negative_slope=slope)
        if (
            t in (aten.max_pool2d.default, aten.max_pool2d_with_indices.default)
            and isinstance(x, Node)
            and x.shape
        ):
            k = _pair(val(1, "kernel_size"))
            s = val(2, "stride", None)
            s = k if not s else _pair(s)
            attrs = dict(kernel=k, stride=s, padding=_pair(val(3, "padding", 0)),
                         dilation=_pair(val(4, "dilation", 1)), ceil_mode=bool(val(5, "ceil_mode", False)))  # fmt: skip
            if t is aten.max_pool2d.default and shape:
                return node("max_pool", [x], **attrs)
        if t in (aten.upsample_nearest2d.vec, aten.upsample_nearest2d.default, aten.upsample_bilinear2d.vec,
                 aten.upsample_bilinear2d.default) and isinstance(x, Node) and x.shape and shape:  # fmt: skip
            r = _resample(fx, x.shape, shape, val)
            if r is not None:
                return node("resample", [x], **r)
        if (
            t in (aten.pad.default, aten.constant_pad_nd.default)
            and isinstance(x, Node)
            and x.shape
            and shape
        ):
            pad = list(val(1, "pad"))
            mode = val(2, "mode", "constant") if t is aten.pad.default else "constant"
            value = val(3, "value", None) if t is aten.pad.default else val(2, "value", 0)
            if mode == "constant" and (value is None or value == 0) and len(pad) in (2, 4):
                pad = pad + [0, 0] * ((4 - len(pad)) // 2)
                left, right, top, bottom = pad
                return node("window", [x], offset=(-top, -left),
                            size=(x.shape[2] + top + bottom, x.shape[3] + left + right),
                            pad=(left, right, top, bottom))  # fmt: skip
        if t is aten.slice.Tensor and isinstance(x, Node) and x.shape and shape:
            dim, start, step = val(1, "dim", 0), val(2, "start", None), val(4, "step", 1)
            dim = dim % 4
            if step == 1 and tuple(shape) == tuple(x.shape):
                return x
            if step == 1 and dim in (2, 3):
                start = 0 if start is None else start
                start = start + x.shape[dim] if isinstance(start, int) and start < 0 else start
                off = (start, 0) if dim == 2 else (0, start)
                return node("window", [x], offset=off, size=(shape[2], shape[3]))
        if t is aten.cat.default and shape:
            xs = [env[v] if isinstance(v, FxNode) else v for v in _arg(fx, 0, "tensors")]
            dim = _arg(fx, 1, "dim", 0)
            if dim % 4 == 1 and all(isinstance(v, Node) and v.shape for v in xs):
                return node("cat", xs)
        if t in (aten.add.Tensor, aten.add_.Tensor) and shape:
            y = val(1, "other")
            if (isinstance(x, Node) and isinstance(y, Node) and x.shape == y.shape == shape
                    and val(2, "alpha", 1) == 1):  # fmt: skip
                return node("add", [x, y])
        if t in (aten.softmax.int, aten._softmax.default) and shape and isinstance(x, Node):
            if val(1, "dim") % 4 == 1:
                return node("softmax", [x])
        if t in (aten.sigmoid.default, aten.sigmoid_.default) and shape and isinstance(x, Node):
            return node("sigmoid", [x])
        if t is aten.argmax.default and isinstance(x, Node) and x.shape:
            if val(1, "dim") is not None and val(1, "dim") % 4 == 1 and not val(2, "keepdim", False):
                return Node("argmax", [x], {}, None, fx.name)
    except (TypeError, IndexError, KeyError):
        pass
    return _fallback(fx, env, shape, target=t)


def _resample(fx: FxNode, in_shape: tuple[int, ...], out_shape: tuple[int, ...], val: Any) -> dict | None:
    """A resample the kernels can read on the fly: an explicit size, or an integer scale (then the
    coordinate ratio PyTorch uses, 1/scale, equals in/out, which is what the kernels use)."""
    t = fx.target
    bilinear = t in (aten.upsample_bilinear2d.vec, aten.upsample_bilinear2d.default)
    size = tuple(out_shape[2:])
    if t in (aten.upsample_nearest2d.vec, aten.upsample_bilinear2d.vec):
        scales = val(3 if bilinear else 2, "scale_factors", None)
    else:
        scales = [val(3 if bilinear else 2, "scales_h", None), val(4 if bilinear else 3, "scales_w", None)]
        scales = None if all(s is None for s in scales) else scales
    if scales is not None:
        for s, i, o in zip(scales, in_shape[2:], size, strict=True):
            if s is None or float(s) != int(s) or i * int(s) != o:
                return None
    return {"mode": "bilinear" if bilinear else "nearest", "size": size,
            "align_corners": bool(val(2, "align_corners", False)) if bilinear else False}  # fmt: skip


def _fallback(fx: FxNode, env: dict[FxNode, Any], shape: tuple[int, ...] | None, *, target: Any = None,
              inner: FxNode | None = None) -> Node:
    """A node calling `target` (default: fx's op) on fx's arguments (those of `inner` for an _Item)."""
    inputs: list[Node] = []

    def sub(v: Any) -> Any:
        if isinstance(v, FxNode):
            e = env[v]
            if isinstance(e, Node):
                for i, n in enumerate(inputs):
                    if n is e:
                        return _Ref(i)
                inputs.append(e)
                return _Ref(len(inputs) - 1)
            return e
        if isinstance(v, (list, tuple)):
            return type(v)(sub(a) for a in v)
        return v

    src = inner if inner is not None else fx
    args = tuple(sub(a) for a in src.args)
    kwargs = {k: sub(v) for k, v in src.kwargs.items()}
    target = fx.target if target is None else target
    name = "getitem" if target is operator.getitem else getattr(target, "__name__", str(target))
    op_name = name.split(".")[0]
    if op_name == "batch_norm":
        reason = "BatchNorm not directly after a convolution"
    elif op_name in ("max_pool2d", "max_pool2d_with_indices"):
        reason = "max-pool other than 2x2 stride 2 on a conv output"
    else:
        reason = f"no fused kernel for {name}"
    return Node("fallback", inputs, {"fn": AtenCall(target, args, kwargs), "target": op_name, "reason": reason},
                shape, fx.name)  # fmt: skip
