"""Rewrite an fp32 ONNX graph to compute in fp16 with fp32 islands, inputs and outputs staying fp32.

Why: strongly typed TensorRT (TensorRT 11 has nothing else; optional in 10) takes each tensor's precision
from the ONNX types instead of a builder flag, so a half-precision engine needs a half-precision graph.

The policy is `torch.autocast(dtype=torch.float16)`'s, on the graph's "activations" (float tensors computed
from the image input; shape arithmetic, which goes through `Shape` and integer ops, is not one):
- `HALF_OPS` (convolutions, matrix products) run in fp16;
- `KEEP_FP32_OPS` (softmax, the normalisations, reductions, pow/exp/log) run in fp32, and so does every node
  with a subgraph (`If`, `Loop`, `Scan`: kept whole, with the outer tensors it reads cast back to fp32), an op
  whose schema has no fp16 for that input, and an op from another domain;
- every other op runs in the precision of its activation inputs, fp32 when any of them is fp32 (autocast's
  "promote"): so the graph input stays fp32 up to the first convolution, and what follows a kept op (a
  LeakyReLU after an InstanceNorm, a decomposed LayerNorm's Sub/Div/Sqrt) stays fp32 up to the next one.
Each node's inputs are then given exactly the type its ONNX schema binds to the activation's type constraint
(read from `onnx.defs`, so Resize's scales, Pad's pads or a Where's condition keep theirs): a weight or
constant gets a converted copy (fp16 values clamped to +-65504), a computed tensor a Cast inserted before the
node that needs it. Graph outputs are cast back to fp32. The result is checked by ONNX's strict type
inference; a failure there is an `ExportError` naming the node (a bug here, never a raw onnx traceback).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from unet_fast.export.errors import ExportError

# Run in fp32 (autocast's fp32 list, in ONNX's names): what overflows or loses its sum in fp16.
KEEP_FP32_OPS: tuple[str, ...] = (
    "Softmax", "LogSoftmax", "InstanceNormalization", "LayerNormalization", "GroupNormalization",
    "BatchNormalization", "LpNormalization", "LRN", "MeanVarianceNormalization", "ReduceMean", "ReduceSum",
    "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceProd", "CumSum",
    "Pow", "Exp", "Log", "Reciprocal", "Softplus",
)  # fmt: skip
# Run in fp16 whatever their inputs' precision (autocast's lower-precision list).
HALF_OPS: tuple[str, ...] = ("Conv", "ConvTranspose", "MatMul", "Gemm")

CAST_IN_PREFIX = "/cast_in/"  # the name of the Cast of a graph input: marks a converted graph
FP16_MAX = 65504.0


def is_converted(proto: Any) -> bool:
    """True when `proto` is already an fp16 graph from `convert_to_half` (or `to_onnx(precision="fp16")`)."""
    if any(n.name.startswith(CAST_IN_PREFIX) for n in proto.graph.node):
        return True
    return any(e.key == "unet_fast.export" and '"precision": "fp16"' in e.value for e in proto.metadata_props)


def _schema(node: Any, opset: int) -> Any:
    import onnx

    if node.domain not in ("", "ai.onnx"):
        return None
    try:
        return onnx.defs.get_schema(node.op_type, opset, "")
    except onnx.defs.SchemaError:
        return None


def _formal(params: Any, i: int) -> Any:
    """The formal parameter of actual position `i` (a trailing variadic parameter takes the rest)."""
    if i < len(params):
        return params[i]
    return params[-1] if params and str(params[-1].option).endswith("Variadic") else None


def _subgraphs(node: Any) -> list[Any]:
    from onnx import AttributeProto

    out = []
    for a in node.attribute:
        if a.type == AttributeProto.GRAPH:
            out.append(a.g)
        elif a.type == AttributeProto.GRAPHS:
            out.extend(a.graphs)
    return out


def _outer_names(graph: Any) -> set[str]:
    """Names a subgraph (and the subgraphs inside it) reads from enclosing scopes."""
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    used: set[str] = set()
    for node in graph.node:
        used.update(n for n in node.input if n)
        for g in _subgraphs(node):
            used |= _outer_names(g)
        defined.update(node.output)
    used.update(o.name for o in graph.output)
    return used - defined


def _rename_outer(graph: Any, renames: dict[str, str]) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
        for g in _subgraphs(node):
            _rename_outer(g, renames)
    for o in graph.output:
        if o.name in renames:
            o.name = renames[o.name]


def _used_names(graph: Any) -> set[str]:
    used = {o.name for o in graph.output}
    for node in graph.node:
        used.update(n for n in node.input if n)
        for g in _subgraphs(node):
            used |= _outer_names(g)
    return used


def _const_array(node: Any) -> np.ndarray | None:
    from onnx import numpy_helper

    for a in node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t)
        if a.name == "value_float":
            return np.array(a.f, dtype=np.float32)
        if a.name == "value_floats":
            return np.array(list(a.floats), dtype=np.float32)
    return None


def _as_half(a: np.ndarray) -> np.ndarray:
    # Finite values beyond fp16's range would become inf (and 0 * inf = NaN downstream): clamp them.
    finite = np.isfinite(a)
    return np.where(finite, np.clip(a, -FP16_MAX, FP16_MAX), a).astype(np.float16)


def convert_to_half(proto: Any, keep_fp32_ops: tuple[str, ...] = KEEP_FP32_OPS) -> list[str]:
    """Rewrite `proto` (an fp32 onnx.ModelProto, e.g. from `to_onnx`) to fp16 in place, by the policy in
    this module's docstring; returns the names of the nodes pinned to fp32 (kept ops, subgraph nodes, ops
    without fp16), in graph order. ValueError when `proto` has no fp32 input or is converted already;
    ExportError when the rewritten graph fails ONNX's type inference. (bf16 would need opset 22, where ONNX's
    Conv first takes bfloat16.)"""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
    graph = proto.graph
    if is_converted(proto):
        raise ValueError("the graph is already converted to fp16")
    float_inputs = [v for v in graph.input if v.type.tensor_type.elem_type == FLOAT]
    if not float_inputs:
        raise ValueError("the graph has no fp32 input to convert")
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 17)

    try:
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    except Exception as e:  # onnx's InferenceError: the fp32 graph itself is not well typed
        raise ExportError(f"cannot infer the tensor types of the fp32 graph: {e}") from e
    types: dict[str, int] = {}
    for v in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        types[v.name] = v.type.tensor_type.elem_type
    inits = {t.name: t for t in graph.initializer}
    types.update({t.name: t.data_type for t in graph.initializer})
    consts: dict[str, Any] = {}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            consts[node.output[0]] = node
    graph_outputs = {o.name for o in graph.output}

    # Pass 1: each node's precision and each value's type after the rewrite.
    new_type = dict(types)
    active = {v.name for v in float_inputs}  # float tensors computed from the image
    # By node index (protobuf hands out a new wrapper object on each access: no id()).
    required: dict[int, dict[int, int]] = {}  # node index -> input position -> the type it must get
    outer_required: dict[int, list[str]] = {}  # node index -> outer names its subgraphs read (kept types)
    pinned: list[str] = []
    keep = set(keep_fp32_ops)
    for k, node in enumerate(graph.node):
        if node.op_type == "Constant":
            continue
        hot = [i for i, n in enumerate(node.input) if n in active]
        subgraphs = _subgraphs(node)
        outer = sorted(set().union(*(_outer_names(g) for g in subgraphs))) if subgraphs else []
        if not hot and not any(n in active for n in outer):
            continue
        schema = _schema(node, opset)
        bound: set[str] = set()  # the type constraints the activation inputs bind ("T", "T1")
        no_half = True
        if schema is not None and not subgraphs:
            allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
            bound = {p.type_str for i in hot if (p := _formal(schema.inputs, i)) is not None} & set(allowed)
            no_half = not bound or not all("tensor(float16)" in allowed[b] for b in bound)
        if node.op_type in keep or subgraphs or schema is None or no_half:
            mode = FLOAT
            pinned.append(node.name or node.op_type)
        elif node.op_type in HALF_OPS or all(new_type.get(node.input[i]) == HALF for i in hot):
            mode = HALF
        else:
            mode = FLOAT  # follows its activation inputs: fp32 when any of them is fp32
        req: dict[int, int] = {}
        for i, name in enumerate(node.input):
            if not name:
                continue
            p = _formal(schema.inputs, i) if schema is not None else None
            if p is not None and p.type_str in bound and types.get(name) == FLOAT:
                req[i] = mode
            else:
                req[i] = types.get(name, 0)  # what the schema types apart keeps its original type
        required[k] = req
        if outer:
            outer_required[k] = outer
        for j, name in enumerate(node.output):
            if not name or types.get(name) != FLOAT:
                continue
            p = _formal(schema.outputs, j) if schema is not None else None
            new_type[name] = mode if (p is not None and p.type_str in bound) else FLOAT
            active.add(name)

    # Pass 2: rewrite, inserting converted constants and Casts where a producer's type is not the one its
    # consumer needs. `physical` maps a value to the tensor that carries it (a graph output computed in
    # fp16 is renamed, and the output itself is a Cast back to fp32).
    physical: dict[str, str] = {}
    made: dict[tuple[str, int], str] = {}
    new_nodes: list[Any] = []
    suffix = {HALF: "fp16", FLOAT: "fp32"}

    def source(name: str, want: int) -> str:
        have = new_type.get(name, 0)
        if not name or want == 0 or have == want:
            return physical.get(name, name)
        if name in graph_outputs and types.get(name) == want:
            return name
        if (name, want) in made:
            return made[(name, want)]
        if want not in suffix or have not in suffix:
            raise ExportError(f"fp16 conversion: cannot give {name!r} type {want} (it is {have})")
        out = f"{name}__{suffix[want]}"
        array = None
        if name in inits:
            array = numpy_helper.to_array(inits[name])
        elif name in consts:
            array = _const_array(consts[name])
        if array is not None:
            converted = _as_half(array) if want == HALF else array.astype(np.float32)
            graph.initializer.append(numpy_helper.from_array(converted, out))
        else:
            cast_name = f"{CAST_IN_PREFIX}{name}" if name in {v.name for v in float_inputs} else f"{out}/Cast"
            new_nodes.append(helper.make_node("Cast", [physical.get(name, name)], [out], to=want, name=cast_name))
        made[(name, want)] = out
        return out

    for k, node in enumerate(graph.node):
        if node.op_type == "Constant":
            new_nodes.append(node)
            continue
        for i, want in required.get(k, {}).items():
            node.input[i] = source(node.input[i], want)
        renames = {}
        for name in outer_required.get(k, []):
            if name in new_type:
                phys = source(name, types.get(name, 0))
                if phys != name:
                    renames[name] = phys
        for g in _subgraphs(node):
            _rename_outer(g, renames)
        new_nodes.append(node)
        for j, name in enumerate(node.output):
            if name in graph_outputs and new_type.get(name) != types.get(name):
                physical[name] = node.output[j] = f"{name}__{suffix[new_type[name]]}"
                new_nodes.append(helper.make_node("Cast", [node.output[j]], [name], to=types[name],
                                                  name=f"/cast_out/{name}"))  # fmt: skip
    del graph.node[:]
    graph.node.extend(new_nodes)

    # What the rewrite left unread: fp32 originals of converted weights, unused Constants.
    used = _used_names(graph)
    unused_consts = [n for n in graph.node if n.op_type == "Constant" and n.output[0] not in used]
    for n in unused_consts:
        graph.node.remove(n)
    kept_inits = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept_inits)

    del graph.value_info[:]  # the exporter's fp32 annotations no longer hold; re-inferred below
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    except Exception as e:  # a node whose inputs disagree: a bug in this module, said in our words
        raise ExportError(f"the fp16 rewrite produced a graph that fails ONNX type inference ({e}); export "
                          "with precision='fp32' and report this model") from e  # fmt: skip
    graph.value_info.extend(inferred.graph.value_info)
    return pinned
