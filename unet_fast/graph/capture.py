"""Capture: torch.export a model, then normalise the ATen graph into an OpGraph.

`capture_dynamic` exports once with a dynamic batch, height and width (torch.export.Dim.AUTO): every size in the
graph (node shapes, pad amounts, crop offsets, resample targets) is then a sympy expression of the input's
(N, H, W) symbols, which graph/symbolic.py evaluates for a concrete input shape in microseconds. `capture`
exports at one static shape (the fallback when a dynamic export fails).

Known ATen patterns become the small op vocabulary of graph/opgraph.py; anything else becomes a `fallback`
node that calls the same ATen op, so an unknown layer costs speed, never correctness.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import Tensor, nn
from torch.fx import Node as FxNode

from unet_fast.graph.opgraph import AtenCall, Node, OpGraph, _Ref
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
    with torch.no_grad():
        return torch.export.export(model, (example,), strict=False)


def export_dynamic(model: nn.Module, example: Tensor) -> torch.export.ExportedProgram:
    """torch.export with batch, height and width dynamic (Dim.AUTO: sizes the model's code branches on become
    guards, see ExportedProgram._guards_code, instead of errors). A size of 1 would be specialised (0/1
    specialisation), so the example's batch is made 2."""
    check_eval_mode(model)
    if example.shape[0] == 1:
        example = example.expand(2, *example.shape[1:]).contiguous()
    auto = torch.export.Dim.AUTO
    with torch.no_grad():
        return torch.export.export(model, (example,), dynamic_shapes=({0: auto, 2: auto, 3: auto},), strict=False)


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
    sig = ep.graph_signature
    state = dict(ep.state_dict)
    state.update({k: v for k, v in ep.constants.items() if isinstance(v, Tensor)})
    lifted = {**sig.inputs_to_parameters, **sig.inputs_to_buffers, **sig.inputs_to_lifted_tensor_constants}
    user_inputs = [n for n in ep.graph.nodes if n.op == "placeholder" and n.name not in lifted]
    if len(user_inputs) != 1:
        raise CaptureError(f"the model must take exactly one tensor input, it takes {len(user_inputs)}")

    env: dict[FxNode, Any] = {}  # fx node -> Node (activation/raw) or a constant tensor
    nodes: list[Node] = []
    output: Node | None = None
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
            outs = fx.args[0]
            outs = outs if isinstance(outs, (list, tuple)) else [outs]
            if len(outs) != 1 or not isinstance(env.get(outs[0]), Node):
                raise CaptureError(f"the model must return one tensor, it returns {len(outs)} values")
            output = env[outs[0]]
    assert output is not None
    g = OpGraph(nodes, env[user_inputs[0]], output)
    g.prune()
    return g


def _arg(fx: FxNode, i: int, name: str, default: Any = None) -> Any:
    if len(fx.args) > i:
        return fx.args[i]
    return fx.kwargs.get(name, default)


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    v = list(v)
    return (int(v[0]), int(v[0] if len(v) == 1 else v[1]))


def _convert(fx: FxNode, env: dict[FxNode, Any]) -> Any:
    t = fx.target
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
        if t in (aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default) and shape:
            if t is aten.batch_norm.default:
                if val(5, "training"):
                    raise TrainingModeError(f"BatchNorm {fx.name} runs in training mode (batch statistics); "
                                            "call model.eval() first", [(fx.name, "batch statistics")])  # fmt: skip
                eps = val(7, "eps")
            else:
                eps = val(6, "eps")
            mean, var = val(3, "running_mean"), val(4, "running_var")
            gamma, beta = val(1, "weight"), val(2, "bias")
            if isinstance(x, Node) and isinstance(mean, Tensor) and isinstance(var, Tensor):
                return node("batch_norm", [x], mean=mean.float(), var=var.float(),
                            gamma=None if gamma is None else gamma.float(),
                            beta=None if beta is None else beta.float(), eps=float(eps))  # fmt: skip
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
    return _fallback(fx, env, shape)


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


def _fallback(fx: FxNode, env: dict[FxNode, Any], shape: tuple[int, ...] | None) -> Node:
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

    args = tuple(sub(a) for a in fx.args)
    kwargs = {k: sub(v) for k, v in fx.kwargs.items()}
    target = fx.target
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
