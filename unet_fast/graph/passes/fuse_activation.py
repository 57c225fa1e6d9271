"""Activation fusion: an activation right after a conv / transposed conv runs in the conv's epilogue."""

from __future__ import annotations

from unet_fast.graph.opgraph import OpGraph


def fuse_activations(g: OpGraph) -> int:
    fused = 0
    for act in [n for n in g.nodes if n.op == "act"]:
        conv = act.inputs[0]
        if conv.op not in ("conv", "conv_transpose") or conv.attrs["act"] != "none":
            continue
        if len(g.users(conv)) != 1 or g.is_output(conv):
            continue
        conv.attrs["act"] = act.attrs["kind"]
        conv.attrs["negative_slope"] = act.attrs["negative_slope"]
        conv.fused.append(f"{act.attrs['kind']}:{act.name}")
        g.replace(act, conv)
        fused += 1
    return fused
