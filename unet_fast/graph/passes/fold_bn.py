"""BN folding: conv / transposed conv followed by eval-mode BatchNorm becomes one conv (graph/bn_fold.py math)."""

from __future__ import annotations

from unet_fast.graph.bn_fold import fold_bn as fold
from unet_fast.graph.opgraph import OpGraph


def fold_batch_norm(g: OpGraph) -> int:
    """Returns how many BatchNorms were folded. A BN whose input has other users stays (a fallback later)."""
    folded = 0
    for bn in [n for n in g.nodes if n.op == "batch_norm"]:
        conv = bn.inputs[0]
        if (
            conv.op not in ("conv", "conv_transpose")
            or conv.attrs["act"] != "none"
            or conv.attrs.get("residual")
        ):
            continue
        if len(g.users(conv)) != 1 or g.is_output(conv):
            continue
        a = conv.attrs
        if conv.op == "conv_transpose" and a["groups"] != 1:
            continue
        a["weight"], a["bias"] = fold(a["weight"], a["bias"], bn.attrs["mean"], bn.attrs["var"], bn.attrs["eps"],
                                      bn.attrs["gamma"], bn.attrs["beta"], out_dim=1 if conv.op == "conv_transpose" else 0)  # fmt: skip
        conv.fused.append(f"bn:{bn.name}")
        g.replace(bn, conv)
        folded += 1
    return folded
