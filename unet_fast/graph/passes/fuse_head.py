"""Head fusion: a final 1x1 conv (+ softmax | sigmoid | argmax over channels) becomes one Head op, for each
tensor the model returns."""

from __future__ import annotations

from unet_fast.graph.opgraph import Node, OpGraph


def fuse_head(g: OpGraph) -> int:
    """Fuse the head of every returned tensor that ends in a 1x1 conv; returns how many were fused."""
    return sum(_fuse_one(g, g.outputs[i]) for i in g.result_indices())


def _fuse_one(g: OpGraph, out: Node) -> bool:
    op = out.op if out.op in ("softmax", "sigmoid", "argmax") else "logits"
    if op != "logits" and not out.inputs:
        return False
    conv = out.inputs[0] if op != "logits" else out
    a = conv.attrs
    if conv.op != "conv" or tuple(a["weight"].shape[2:]) != (1, 1) or a["act"] != "none" or a.get("residual"):
        return False
    if a["stride"] != (1, 1) or a["padding"] != (0, 0) or a["groups"] != 1:
        return False
    if op != "logits" and (len(g.users(conv)) != 1 or g.is_output(conv)):
        return False
    w = a["weight"].reshape(a["weight"].shape[0], -1)
    head = Node("head", [conv.inputs[0]], {"weight": w, "bias": a["bias"], "op": op}, out.shape, conv.name,
                fused=[*conv.fused, *([f"{op}:{out.name}"] if op != "logits" else [])])  # fmt: skip
    g.nodes.insert(g.nodes.index(out), head)
    g.replace(out, head)
    g.prune()
    return True
