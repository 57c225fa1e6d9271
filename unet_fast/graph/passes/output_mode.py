"""Output options: the model's own output, logits, probabilities (softmax/sigmoid) or a class map (argmax)."""

from __future__ import annotations

from typing import Literal

from unet_fast.graph.opgraph import Node, OpGraph

OutputMode = Literal["model", "logits", "probabilities", "classes"]
OUTPUT_MODES = ("model", "logits", "probabilities", "classes")


def model_gives_output(g: OpGraph, mode: str) -> bool:
    """Whether the model's own output already is `mode` (call before `set_output` rewrites the tail): its
    own softmax / sigmoid for "probabilities", its own argmax for "classes", a last conv for "logits". The
    engine then returns it in the memory format the model itself would."""
    if mode == "model":
        return True
    last = g.output.op if g.output.op in ("softmax", "sigmoid", "argmax") else "logits"
    return {"probabilities": last in ("softmax", "sigmoid"), "classes": last == "argmax",
            "logits": last == "logits"}.get(mode, False)  # fmt: skip


def set_output(g: OpGraph, mode: str) -> str:
    """Rewrite the graph's tail for `mode`; returns a line for the report."""
    if mode not in OUTPUT_MODES:
        raise ValueError(f"output={mode!r} is not one of {OUTPUT_MODES}")
    if mode == "model":
        return "output: as the model returns it"
    out = g.output
    last = out.op if out.op in ("softmax", "sigmoid", "argmax") else "logits"
    logits = out.inputs[0] if last != "logits" else out
    if logits.shape is None:
        raise ValueError(f"output={mode!r} needs the model to end in a 4-D [N, K, H, W] tensor")
    if mode == "logits":
        if last == "argmax":
            raise ValueError("output='logits' is not available: the model returns a class map")
        g.output = logits
        g.prune()
        return f"output: logits (dropped the model's final {last})" if last != "logits" else "output: logits"
    if mode == "probabilities":
        if last in ("softmax", "sigmoid"):
            return f"output: probabilities ({last}, as the model)"
        if last == "argmax":
            raise ValueError("output='probabilities' is not available: the model returns a class map")
        op = "softmax" if logits.shape[1] > 1 else "sigmoid"
        _append(g, Node(op, [logits], {}, logits.shape, f"{op}_out"))
        return f"output: probabilities ({op} over the {logits.shape[1]} channels)"
    # classes
    if logits.shape[1] < 2:
        raise ValueError("output='classes' needs at least 2 output channels (argmax over 1 channel is all 0)")
    if last == "argmax":
        return "output: class map (as the model)"
    g.output = logits
    g.prune()
    _append(g, Node("argmax", [logits], {}, None, "argmax_out"))
    return f"output: class map (argmax over {logits.shape[1]} channels; the model's {last} is skipped)"


def _append(g: OpGraph, node: Node) -> None:
    g.nodes.append(node)
    g.output = node
