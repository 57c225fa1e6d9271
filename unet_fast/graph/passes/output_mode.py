"""Output options: the model's own output, logits, probabilities (softmax/sigmoid) or a class map (argmax).

A model returning several tensors (a tuple, list or dict: `{"out": y, "aux": a}`, a deep-supervision list)
gets the option applied to each tensor it returns, and keeps its structure (`output="classes"` on
`{"out": y, "aux": a}` returns `{"out": classes of y, "aux": classes of a}`); a returned tensor that cannot
take the option (not [N, K, H, W], a class map already, one channel for "classes") is a ValueError naming it.
"""

from __future__ import annotations

from typing import Literal

from unet_fast.graph.opgraph import Node, OpGraph

OutputMode = Literal["model", "logits", "probabilities", "classes"]
OUTPUT_MODES = ("model", "logits", "probabilities", "classes")


def _last(n: Node) -> str:
    return n.op if n.op in ("softmax", "sigmoid", "argmax") else "logits"


def model_gives_output(g: OpGraph, mode: str) -> bool:
    """Whether the model's own outputs already are `mode` (call before `set_output` rewrites the tails): its
    own softmax / sigmoid for "probabilities", its own argmax for "classes", a last conv for "logits". The
    engine then returns them in the memory format the model itself would."""
    if mode == "model":
        return True
    want = {"probabilities": ("softmax", "sigmoid"), "classes": ("argmax",), "logits": ("logits",)}.get(mode, ())
    return all(_last(g.outputs[i]) in want for i in g.result_indices())


def set_output(g: OpGraph, mode: str) -> str:
    """Rewrite the tail of each returned tensor for `mode`; returns a line for the report."""
    if mode not in OUTPUT_MODES:
        raise ValueError(f"output={mode!r} is not one of {OUTPUT_MODES}")
    if mode == "model":
        return "output: as the model returns it"
    lines = []
    for i in g.result_indices():
        name = g.output_name(i)
        try:
            node, line = _tail(g, g.outputs[i], mode)
        except ValueError as e:
            raise ValueError(f"the model's output {name}: {e}" if name else str(e)) from None
        g.outputs[i] = node
        if node not in g.nodes:
            g.nodes.append(node)
        lines.append(f"{name}: {line}" if name else line)
    g.prune()
    return "output: " + "; ".join(lines)


def _tail(g: OpGraph, out: Node, mode: str) -> tuple[Node, str]:
    """The node giving `mode` for the returned tensor `out`, and a report phrase."""
    last = _last(out)
    logits = out.inputs[0] if last != "logits" else out
    if logits.shape is None or out is g.input:
        raise ValueError(f"output={mode!r} needs the model to end in a 4-D [N, K, H, W] tensor")
    if mode == "logits":
        if last == "argmax":
            raise ValueError("output='logits' is not available: the model returns a class map")
        return logits, (f"logits (dropped the model's final {last})" if last != "logits" else "logits")
    if mode == "probabilities":
        if last in ("softmax", "sigmoid"):
            return out, f"probabilities ({last}, as the model)"
        if last == "argmax":
            raise ValueError("output='probabilities' is not available: the model returns a class map")
        op = "softmax" if logits.shape[1] > 1 else "sigmoid"
        return Node(op, [logits], {}, logits.shape, f"{op}_out"), (
            f"probabilities ({op} over the {logits.shape[1]} channels)"
        )
    # classes
    if last == "argmax":
        return out, "class map (as the model)"
    if logits.shape[1] < 2:
        raise ValueError("output='classes' needs at least 2 output channels (argmax over 1 channel is all 0)")
    return Node("argmax", [logits], {}, None, "argmax_out"), (
        f"class map (argmax over {logits.shape[1]} channels; the model's {last} is skipped)"
    )
