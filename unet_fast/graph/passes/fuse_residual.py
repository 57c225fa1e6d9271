"""Residual fusion: add(conv(x), r) becomes conv(x) with r added in the epilogue, before the activation
(ResNet blocks: conv -> BN -> += identity -> ReLU). Run fuse_activations after it to pick up the ReLU."""

from __future__ import annotations

from unet_fast.graph.opgraph import OpGraph


def fuse_residuals(g: OpGraph) -> int:
    fused = 0
    for add in [n for n in g.nodes if n.op == "add"]:
        for i in (0, 1):
            conv, other = add.inputs[i], add.inputs[1 - i]
            a = conv.attrs
            if conv.op != "conv" or a["act"] != "none" or a.get("residual") or a["groups"] != 1:
                continue
            if len(g.users(conv)) != 1 or g.is_output(conv) or other is conv:
                continue
            if _depends_on(other, conv):
                continue
            conv.inputs = [conv.inputs[0], other]
            a["residual"] = True
            conv.fused.append(f"residual:{add.name}")
            g.replace(add, conv)
            fused += 1
            break
    return fused


def _depends_on(node: object, target: object) -> bool:
    stack, seen = [node], set()
    while stack:
        n = stack.pop()
        if n is target:
            return True
        if id(n) not in seen:
            seen.add(id(n))
            stack.extend(n.inputs)
    return False
