"""Rewrite an fp32 ONNX graph to compute in fp16, keeping chosen ops (softmax, normalisations) in
fp32 and the graph's inputs and outputs in fp32.

Why: strongly typed TensorRT (TensorRT 11 has nothing else; optional in 10) takes each tensor's precision
from the ONNX types instead of a builder flag, so a half-precision engine needs a half-precision graph.

How: "activation" tensors are those computed from the image input (shape arithmetic, which goes through
`Shape` and integer ops, is not). A Cast after the input makes them half; every float constant feeding
an op together with an activation (conv weights and biases, a pad value, a threshold) is converted, except
Resize's roi and scales, which ONNX types as float32. Kept-fp32 ops get Casts around them, and float
outputs are cast back to fp32.
"""

from __future__ import annotations

from typing import Any

import numpy as np

KEEP_FP32_OPS: tuple[str, ...] = ("Softmax", "LogSoftmax", "InstanceNormalization", "LayerNormalization",
                                  "GroupNormalization", "BatchNormalization", "ReduceMean")  # fmt: skip
# Inputs (by position) that keep their own type whatever the activation type is.
_TYPED_APART = {"Resize": {1, 2, 3}, "Pad": {1, 3}, "Slice": {1, 2, 3, 4}, "Reshape": {1}, "Expand": {1},
                "Upsample": {1}}  # fmt: skip
# Ops whose outputs are not activations even when an input is (integer or boolean results).
_NOT_FLOAT_OUT = {"Shape", "Size", "ArgMax", "ArgMin", "Greater", "Less", "Equal", "GreaterOrEqual", "LessOrEqual",
                  "Not", "And", "Or", "Cast"}  # fmt: skip


def convert_to_half(proto: Any, keep_fp32_ops: tuple[str, ...] = KEEP_FP32_OPS) -> list[str]:
    """Rewrite `proto` (an fp32 onnx.ModelProto, e.g. from `to_onnx`) to fp16 in place; returns the names
    of the nodes kept in fp32. (bf16 would need opset 22, where ONNX's Conv first takes bfloat16.)"""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    half = TensorProto.FLOAT16
    graph = proto.graph
    if any(n.name.startswith("/cast_in/") for n in graph.node):
        raise ValueError("the graph is already converted to fp16")
    float_inputs = [v for v in graph.input if v.type.tensor_type.elem_type == TensorProto.FLOAT]
    if not float_inputs:
        raise ValueError("the graph has no fp32 input to convert")

    inits = {t.name: t for t in graph.initializer}
    const_nodes = {n.output[0]: n for n in graph.node if n.op_type == "Constant"}
    # Which tensors are activations: forward from the float inputs, in graph (topological) order.
    active = {v.name for v in float_inputs}
    for node in graph.node:
        if node.op_type in _NOT_FLOAT_OUT or node.op_type == "Constant":
            continue
        apart = _TYPED_APART.get(node.op_type, set())
        if any(name in active for i, name in enumerate(node.input) if i not in apart):
            active.update(o for o in node.output if o)

    def to_half(t: Any) -> Any:
        return numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name)

    converted: set[str] = set()
    for node in graph.node:
        apart = _TYPED_APART.get(node.op_type, set())
        if node.op_type == "Constant" or not any(n in active for n in node.input):
            continue
        for i, name in enumerate(node.input):
            if i in apart or not name or name in active or name in converted:
                continue
            if name in inits and inits[name].data_type == TensorProto.FLOAT:
                inits[name].CopyFrom(to_half(inits[name]))
                converted.add(name)
            elif name in const_nodes:
                attr = next(a for a in const_nodes[name].attribute if a.name == "value")
                if attr.t.data_type == TensorProto.FLOAT:
                    attr.t.CopyFrom(to_half(attr.t))
                    converted.add(name)

    new_nodes = []
    # Cast each float input to half: the node inputs are renamed to the cast's output.
    renames: dict[str, str] = {}
    for v in float_inputs:
        renames[v.name] = f"{v.name}_half"
        new_nodes.append(
            helper.make_node("Cast", [v.name], [renames[v.name]], to=half, name=f"/cast_in/{v.name}")
        )

    outputs = {o.name for o in graph.output}
    pinned: list[str] = []
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
        if node.op_type in keep_fp32_ops and any(n in active for n in node.input):
            for i, name in enumerate(node.input):
                if name in active or name in renames.values():
                    cast = f"{name}_fp32_for_{node.name or node.op_type}"
                    new_nodes.append(
                        helper.make_node("Cast", [name], [cast], to=TensorProto.FLOAT, name=f"{cast}/Cast")
                    )
                    node.input[i] = cast
            new_nodes.append(node)
            for j, name in enumerate(node.output):
                if name in outputs:
                    continue  # an fp32 result that leaves the graph stays fp32: no round trip through half
                node.output[j] = f"{name}_fp32"
                new_nodes.append(
                    helper.make_node("Cast", [node.output[j]], [name], to=half, name=f"{name}/CastHalf")
                )
            pinned.append(node.name or node.op_type)
            active.difference_update(o for o in node.output if o in outputs)
            continue
        if node.op_type in _NOT_FLOAT_OUT or node.op_type == "Constant":
            new_nodes.append(node)
            continue
        new_nodes.append(node)
        for j, name in enumerate(node.output):
            if name in outputs and name in active:
                node.output[j] = f"{name}_half"
                new_nodes.append(helper.make_node("Cast", [node.output[j]], [name], to=TensorProto.FLOAT,
                                                  name=f"/cast_out/{name}"))  # fmt: skip
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.value_info[:]  # the exporter's fp32 annotations no longer hold; re-inferred below
    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    graph.value_info.extend(inferred.graph.value_info)
    return pinned
