"""FusedUNet.report(): backend, captures (and re-captures due to guards), prepared weights, the cached
shapes with their arena sizes, and the most recently used plan step by step."""

from __future__ import annotations

from typing import TYPE_CHECKING

from unet_fast.backends.executor import Executor
from unet_fast.graph.ir import Fallback

if TYPE_CHECKING:
    from unet_fast.engine.compiler import CompiledPlan
    from unet_fast.engine.module import FusedUNet


def report(m: FusedUNet) -> str:
    lines = [f"FusedUNet: backend {m.backend.name!r} ({m.backend_reason}), device {m.device}, "
             f"dtype {str(m.dtype).replace('torch.', '')}, output {m.config.output!r}"
             f"{', CUDA graphs' if m.config.cuda_graphs else ''}"]  # fmt: skip
    missing = m.backend.missing_functions() if m.backend.name != "torch" else []
    if missing:
        lines.append(f"  {m.backend.name} kernels missing: {', '.join(missing)} (those steps run the "
                     "torch reference)")  # fmt: skip
    caps = m.captures
    dropped = m.__dict__.get("_dropped_captures", 0)
    if caps[0].dynamic:
        lines.append(f"captures: {len(caps)} ({len(caps) - 1 + dropped} re-captures due to guards"
                     f"{f', {dropped} oldest dropped' if dropped else ''})")  # fmt: skip
    else:
        lines.append(f"captures: {len(caps)} static, one per input size (the dynamic export failed)"
                     f"{f'; {dropped} oldest dropped' if dropped else ''}")  # fmt: skip
    for c in caps:
        kind = "shape-generic (dynamic N, H, W)" if c.dynamic else "static"
        lines.append(f"  {kind}, {len(c.graph.guards)} guards: {c.reason}")
    w = m._weights
    lines.append(f"weights: {len(w)} prepared once for ({m.backend.name}, {m.device}, "
                 f"{str(m.dtype).replace('torch.', '')}), {w.nbytes() / 2**20:.1f} MiB, shared by every shape and thread")  # fmt: skip
    items = m._cache.items()
    elem = m._weights.dtype.itemsize if hasattr(m._weights.dtype, "itemsize") else 4
    lines.append(f"cached shapes: {len(items)} of at most {m.config.max_cached_shapes} (least recently used "
                 f"first; {m._cache.evictions} evicted so far); arena per calling thread:")  # fmt: skip
    for (n, h, wd), e in items:
        arena = n * e.compiled.buffers.arena_per_sample * elem
        lines.append(f"  N x H x W = {n}x{h}x{wd}: {len(e.compiled.plan.steps)} steps, arena {arena / 2**20:.2f} MiB")
    if items:
        _, last = items[-1]
        lines.extend(describe(last.compiled, last.executor))
    return "\n".join(lines)


def describe(c: CompiledPlan, ex: Executor) -> list[str]:
    n, h, w = c.shape[0], c.shape[2], c.shape[3]
    lines = [f"plan for N x H x W = {n}x{h}x{w} (most recently used): {len(c.plan.steps)} steps"]
    lines += ["  pass " + s for s in c.pass_lines]
    kinds: dict[str, int] = {}
    for s in c.plan.steps:
        kinds[s.kind] = kinds.get(s.kind, 0) + 1
    lines.append("  steps by kind: " + ", ".join(f"{k} {v}" for k, v in kinds.items()))
    reads = sum(1 for s in c.plan.steps for r in s.reads() if r.resample is not None)
    windows = sum(1 for s in c.plan.steps for r in s.reads() if r.size is not None)
    virtual = sum(
        1 for s in c.plan.steps if s.kind == "Conv" and len(s.reads()) - (s.residual is not None) > 1
    )
    lines.append(f"  fuse_upsample: {reads} resamples and {windows} crops/pads read on the fly; "
                 f"{virtual} convs read a virtual concat")  # fmt: skip
    unshared = c.buffers.total_per_sample_unshared(c.plan)
    lines.append(f"  buffers: {len(c.plan.buffers)}; arena {c.buffers.arena_per_sample} elements per sample "
                 f"(unshared {unshared})")  # fmt: skip
    fallbacks = [s for s in c.plan.steps if isinstance(s, Fallback)]
    lines.append(f"  fallbacks: {len(fallbacks)}" + (" (run by PyTorch)" if fallbacks else ""))
    algos = ex.step_algorithms()
    for algo in dict.fromkeys(a for a in algos if a):  # each algorithm once, in plan order
        exact = " (exact=True: none)" if algo.startswith("Winograd") else ""
        kinds_of = {s.kind for s, a in zip(c.plan.steps, algos, strict=True) if a == algo}
        what = "convs" if kinds_of <= {"Conv", "ConvTranspose2x2"} else "steps"
        lines.append(f"  algorithms: {algos.count(algo)} {what} by {algo}{exact}")
    refs = [s.kind for s, note in zip(c.plan.steps, ex.step_notes(), strict=True) if "torch reference" in note]
    if refs:
        kinds_ = ", ".join(f"{k} {refs.count(k)}" for k in dict.fromkeys(refs))
        lines.append(f"  torch reference in {str(ex.dtype).replace('torch.', '')}: {len(refs)} steps ({kinds_}); "
                     "the reason per step below")  # fmt: skip
    variants = ex.step_variants()
    for v in dict.fromkeys(v for v in variants if v):
        lines.append(f"  kernel variant: {variants.count(v)} steps packed for the {v} build of the C++ CPU kernels")
    for i, (s, note, algo, variant) in enumerate(
        zip(c.plan.steps, ex.step_notes(), algos, variants, strict=True)
    ):
        reads_ = ", ".join(r.describe() if not isinstance(r, str) else r for r in getattr(s, "inputs", [])
                           ) if hasattr(s, "inputs") else ", ".join(r.describe() for r in s.reads())  # fmt: skip
        writes = ", ".join(w.describe() for w in s.writes())
        extra = f" FALLBACK: {s.reason}" if isinstance(s, Fallback) else ""
        extra += f" [{note}]" if note else ""
        extra += f" ({algo})" if algo else ""
        extra += f" [variant {variant}]" if variant and variant not in algo else ""
        lines.append(f"  {i:3d} {s.kind:<16} {s.name}: {reads_} -> {writes}{extra}")
    return lines
