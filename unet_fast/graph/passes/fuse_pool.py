"""Pool-epilogue fusion: a 2x2/stride-2 max-pool of a conv's output is written by that conv's epilogue
(the encoder's skip and the next level's input in one pass). Marks the pool; lowering drops its step."""

from __future__ import annotations

from unet_fast.graph.opgraph import Node, OpGraph


def is_pool2x2(n: Node) -> bool:
    a = n.attrs
    if n.op != "max_pool" or a["kernel"] != (2, 2) or a["stride"] != (2, 2) or a["padding"] != (0, 0):
        return False
    if a["dilation"] != (1, 1):
        return False
    # ceil_mode only matters for odd sizes, where it would read a partial window the kernels do not.
    h, w = n.inputs[0].shape[2:]
    return not a["ceil_mode"] or (h % 2 == 0 and w % 2 == 0)


def fuse_pools(g: OpGraph) -> int:
    fused = 0
    taken: set[int] = set()
    for pool in [n for n in g.nodes if is_pool2x2(n)]:
        conv = pool.inputs[0]
        if conv.op != "conv" or conv.attrs["groups"] != 1 or id(conv) in taken:
            continue
        h, w = conv.shape[2:]
        if h < 2 or w < 2:
            continue
        pool.attrs["epilogue"] = True
        taken.add(id(conv))
        fused += 1
    return fused
