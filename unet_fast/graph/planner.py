"""Buffer planner: lifetimes of the plan's buffers and their offsets in one arena reused across calls.

Sizes are per sample (H*W*C elements); with batch N every offset scales by N, so one layout serves every
batch. Two buffers share arena space only when their lifetimes (first write .. last read, in steps) do not
overlap. Buffers outside the arena: the input (the caller's tensor), the output (returned to the caller,
so it must not be overwritten by the next call) and integer class maps (another dtype).
"""

from __future__ import annotations

from dataclasses import dataclass

from unet_fast.graph.ir import Plan, Slice

ALIGN = 16  # elements: 64 bytes in fp32, so every buffer starts on a cache line


@dataclass(frozen=True)
class BufferPlan:
    offsets: dict[str, int]  # per-sample element offset in the arena
    lifetimes: dict[str, tuple[int, int]]  # first step writing .. last step reading
    arena_per_sample: int  # elements per sample
    external: frozenset[str]  # buffers allocated per call outside the arena

    def total_per_sample_unshared(self, plan: Plan) -> int:
        return sum(_numel(plan, b) for b in self.offsets)


def _numel(plan: Plan, name: str) -> int:
    b = plan.buffers[name]
    return b.size[0] * b.size[1] * b.channels


def _round(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def lifetimes(plan: Plan) -> dict[str, tuple[int, int]]:
    span: dict[str, list[int]] = {}
    for i, step in enumerate(plan.steps):
        for s in step.writes() + step.reads():
            lo_hi = span.setdefault(s.buffer, [i, i])
            lo_hi[0], lo_hi[1] = min(lo_hi[0], i), max(lo_hi[1], i)
    return {k: (v[0], v[1]) for k, v in span.items()}


def plan_buffers(plan: Plan) -> BufferPlan:
    life = lifetimes(plan)
    external = {plan.input.buffer}
    external |= {o.buffer for o in plan.outputs if isinstance(o, Slice)}
    external |= {n for n, b in plan.buffers.items() if b.index}
    inside = sorted((n for n in plan.buffers if n not in external and n in life),
                    key=lambda n: (-_numel(plan, n), life[n][0]))  # fmt: skip
    placed: list[tuple[int, int, str]] = []  # (offset, end, name)
    offsets: dict[str, int] = {}
    for name in inside:
        size = _round(_numel(plan, name))
        lo, hi = life[name]
        # live neighbours, sorted by offset: take the lowest gap that fits (greedy by size, a classic)
        busy = sorted((o, e) for o, e, other in placed if not (life[other][1] < lo or hi < life[other][0]))
        at = 0
        for o, e in busy:
            if at + size <= o:
                break
            at = max(at, e)
        offsets[name] = at
        placed.append((at, at + size, name))
    total = max((e for _, e, _ in placed), default=0)
    return BufferPlan(offsets, life, total, frozenset(external))
