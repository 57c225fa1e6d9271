"""Graph passes, each on its own (tested one by one in tests/graph/), and the default pipeline."""

from __future__ import annotations

from unet_fast.graph.opgraph import OpGraph
from unet_fast.graph.passes.eliminate_concat import eliminate_concats
from unet_fast.graph.passes.fold_bn import fold_batch_norm
from unet_fast.graph.passes.fuse_activation import fuse_activations
from unet_fast.graph.passes.fuse_head import fuse_head
from unet_fast.graph.passes.fuse_pool import fuse_pools
from unet_fast.graph.passes.fuse_residual import fuse_residuals
from unet_fast.graph.passes.output_mode import OUTPUT_MODES, set_output

# "fuse_upsample" (resample / crop / pad read on the fly by the consumer) and virtual concat happen while
# lowering (graph/lower.py): they decide how a step reads, not what the graph computes.
PASSES = ("fold_bn", "fuse_activation", "fuse_residual", "fuse_pool", "eliminate_concat", "fuse_upsample",
          "fuse_head")  # fmt: skip

__all__ = ["OUTPUT_MODES", "PASSES", "run_passes", "run_shape_free_passes", "run_shape_passes"]


def _enabled(enabled: frozenset[str] | set[str] | None) -> set[str]:
    on = set(PASSES) if enabled is None else set(enabled)
    unknown = on - set(PASSES)
    if unknown:
        raise ValueError(f"unknown passes {sorted(unknown)}; choose from {PASSES}")
    return on


def run_passes(
    g: OpGraph, output: str = "model", enabled: frozenset[str] | set[str] | None = None
) -> list[str]:
    """Rewrite `g` in place; returns report lines, one per pass."""
    return run_shape_free_passes(g, output, enabled) + run_shape_passes(g, enabled)


def run_shape_free_passes(
    g: OpGraph, output: str = "model", enabled: frozenset[str] | set[str] | None = None
) -> list[str]:
    """The passes that never look at a size (output mode, BN folding, activation / residual / head fusion):
    run once on a shape-generic capture, so the folded weights exist once and every shape's graph shares
    them (and a new shape does not pay for them)."""
    on = _enabled(enabled)
    lines = [set_output(g, output)]
    if "fold_bn" in on:
        lines.append(f"fold_bn: {fold_batch_norm(g)} BatchNorm folded into convolutions")
    if "fuse_activation" in on:
        n = fuse_activations(g)
        if "fuse_residual" in on:
            r = fuse_residuals(g)
            n += fuse_activations(g)
            lines.append(f"fuse_residual: {r} residual adds fused into conv epilogues")
        lines.append(f"fuse_activation: {n} activations fused into conv epilogues")
    elif "fuse_residual" in on:
        lines.append(f"fuse_residual: {fuse_residuals(g)} residual adds fused into conv epilogues")
    if "fuse_head" in on:
        n = fuse_head(g)
        many = len(g.result_indices()) > 1
        lines.append("fuse_head: " + (f"{n} final 1x1 conv + op fused into Head steps" if many and n
                                      else "final 1x1 conv + op fused into a Head step" if n
                                      else "not applicable (the output is not a 1x1 conv [+ softmax/sigmoid/argmax])"))  # fmt: skip
    return lines


def run_shape_passes(g: OpGraph, enabled: frozenset[str] | set[str] | None = None) -> list[str]:
    """The passes whose decisions depend on concrete sizes (2x2 pool of an odd map, concat slots of equal
    sizes): run per input shape on a concrete graph. Cheap (they only mark nodes)."""
    on = _enabled(enabled)
    lines: list[str] = []
    if "fuse_pool" in on:
        lines.append(f"fuse_pool: {fuse_pools(g)} 2x2 max-pools written by their conv's epilogue")
    if "eliminate_concat" in on:
        lines.append(f"eliminate_concat: {eliminate_concats(g)} concats written in place by their producers")
    return lines
