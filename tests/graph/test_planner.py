"""Buffer planner: lifetimes cover every use, live buffers never share arena space, and sharing saves memory."""

from __future__ import annotations

import torch
from graph_helpers import graph_of, randomize

from unet_fast import UNet
from unet_fast.graph.lower import lower
from unet_fast.graph.passes import run_passes
from unet_fast.graph.planner import ALIGN, lifetimes, plan_buffers


def test_arena_offsets_never_overlap_while_live() -> None:
    m = randomize(UNet(3, 2, 4, 3, "batch", "transpose"))
    x = torch.randn(1, 3, 24, 24)
    g = graph_of(m, x)
    run_passes(g)
    plan = lower(g)
    bp = plan_buffers(plan)
    life = lifetimes(plan)
    for i, step in enumerate(plan.steps):
        for s in step.reads() + step.writes():
            lo, hi = life[s.buffer]
            assert lo <= i <= hi
    assert plan.input.buffer in bp.external and plan.output.buffer in bp.external
    names = list(bp.offsets)
    for a in names:
        assert bp.offsets[a] % ALIGN == 0
        for b in names:
            if a >= b:
                continue
            (la, ha), (lb, hb) = bp.lifetimes[a], bp.lifetimes[b]
            if ha < lb or hb < la:
                continue  # never live together: may share
            ba, bb = plan.buffers[a], plan.buffers[b]
            ea = bp.offsets[a] + ba.size[0] * ba.size[1] * ba.channels
            eb = bp.offsets[b] + bb.size[0] * bb.size[1] * bb.channels
            assert ea <= bp.offsets[b] or eb <= bp.offsets[a], f"{a} and {b} overlap while both live"
    assert bp.arena_per_sample < bp.total_per_sample_unshared(plan)
