"""Concat elimination: a channel concat whose inputs all have their own buffers of the concat's size is
allocated once, and each producer writes straight into its slot (no copy, one buffer for the consumer).
Other concats are read as a virtual concat by the convs that consume them (see graph/lower.py)."""

from __future__ import annotations

from unet_fast.graph.opgraph import Node, OpGraph

# ops that own an output buffer the lowering can point at a slot of another buffer
_SLOTTABLE = {"conv", "conv_transpose", "max_pool", "batch_norm", "act", "add", "fallback"}


def eliminate_concats(g: OpGraph) -> int:
    slotted: set[int] = set()
    count = 0
    for cat in [n for n in g.nodes if n.op == "cat"]:
        if all(_slottable(g, x, cat, slotted) for x in cat.inputs) and len(
            {id(x) for x in cat.inputs}
        ) == len(cat.inputs):
            cat.attrs["slots"] = True
            slotted.update(id(x) for x in cat.inputs)
            count += 1
    return count


def _slottable(g: OpGraph, x: Node, cat: Node, slotted: set[int]) -> bool:
    return (x.op in _SLOTTABLE and x.shape is not None and x.shape[2:] == cat.shape[2:] and id(x) not in slotted
            and not g.is_output(x))  # fmt: skip
