"""FusedUNet.report_data() / report(): what the engine captured, fused and prepared, and what runs each step, as
data (`EngineReport`, one `StepRecord` per plan step: backends/executor.py) and as text rendered from it.

Tools read the fields (the bench's contenders, the tests); the text is only a rendering of them (shared/
STYLE.md, "Reports as data"). This module reads the engine through the `_Engine` protocol below and
imports nothing of engine/module.py.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from unet_fast.backends.executor import FALLBACK_KERNEL, StepRecord
from unet_fast.kernels.registry import REFERENCE_BACKEND

__all__ = ["FALLBACK_KERNEL", "ArtifactRecord", "CacheRecord", "CaptureRecord", "EngineReport", "PlanRecord",
           "StepRecord", "collect", "render"]


@dataclass(frozen=True)
class CaptureRecord:
    """One capture of the model: shape-generic (dynamic N, H, W) or static, its export guards, and why it
    exists ('optimize at ...', 're-captured at ...: a guard ... fails there')."""

    dynamic: bool
    guards: int
    reason: str


@dataclass(frozen=True)
class ArtifactRecord:
    """How a loaded engine came to be (unet_fast.load, or a compile-cache hit): the file, its format version
    and what wrote it, the load time in seconds, how many packed weights were used as the file holds them,
    which were packed again here (kernel, count) and why, the kernel rows the file was packed for ('cpu=avx512,
    bf16=none'), and whether a model was given (then a shape no saved capture serves is captured again)."""

    path: str
    format_version: int
    written_by: str
    content_sha256: str
    seconds: float
    stored: int
    repacked: tuple[tuple[str, int], ...]
    reason: str
    kernels: str
    model: bool

    @property
    def repacked_count(self) -> int:
        return sum(n for _, n in self.repacked)


@dataclass(frozen=True)
class CacheRecord:
    """What the compile cache did for this optimize(): status 'hit' (loaded), 'miss' (compiled and written),
    'rebuilt' (an entry was there but unusable: `reason`), 'unwritten' (compiled, but the entry could not be
    written: `reason`) or 'off' (the model cannot be keyed: `reason`); the entry's path and key; seconds spent
    on the cache (the key, and the load or the save)."""

    status: str
    path: str
    key: str
    reason: str
    seconds: float


@dataclass(frozen=True)
class PlanRecord:
    """The most recently used plan: its input shape (N, H, W), the passes' report lines, steps by kind, what
    the views fuse (resamples and crops read on the fly, convs reading a virtual concat, residual adds),
    buffers and arena elements per sample (and without sharing), Fallback steps."""

    shape: tuple[int, int, int]
    pass_lines: tuple[str, ...]
    steps_by_kind: dict[str, int]
    resamples: int
    windows: int
    virtual_concats: int
    residuals: int
    buffers: int
    arena_per_sample: int
    arena_unshared_per_sample: int
    fallbacks: int


@dataclass(frozen=True)
class EngineReport:
    """Everything report() says, as fields. steps: one StepRecord per step of the most recently used plan
    (empty before any plan exists)."""

    backend: str
    backend_reason: str
    device: str
    dtype: str
    output: str
    cuda_graphs: bool
    kernels_forced: str  # what UNET_FAST_KERNELS (or its aliases) forced, '' nothing
    captures: tuple[CaptureRecord, ...]
    dropped_captures: int
    weights: int
    weights_mib: float
    cached_shapes: tuple[tuple[tuple[int, int, int], int, float], ...]  # ((N, H, W), steps, arena MiB), LRU first
    max_cached_shapes: int
    evictions: int
    plan: PlanRecord | None
    steps: tuple[StepRecord, ...] = field(default=())
    artifact: ArtifactRecord | None = None  # set when the engine was loaded from a file (or a cache entry)
    cache: CacheRecord | None = None  # set when optimize() used the compile cache

    @property
    def recaptures(self) -> int:
        """Captures made after the first (guards, or static captures), dropped ones included."""
        return len(self.captures) - 1 + self.dropped_captures

    @property
    def references(self) -> tuple[StepRecord, ...]:
        """The plan steps the torch reference runs for a backend whose kernels do not take them."""
        return tuple(s for s in self.steps if s.reference)

    def count(self, **fields: Any) -> int:
        """How many steps have all of `fields` (e.g. count(kernel='cpu.head.avx2'), count(isa='avx512'))."""
        return sum(all(getattr(s, k) == v for k, v in fields.items()) for s in self.steps)

    def __str__(self) -> str:
        return render(self)


class _Engine(Protocol):
    """What collect() reads of a FusedUNet (engine/module.py)."""

    backend: Any
    backend_reason: str
    device: torch.device
    dtype: torch.dtype
    config: Any
    captures: list[Any]
    _weights: Any
    _cache: Any

    def executor_for(self, shape: tuple[int, ...]) -> Any: ...


def collect(m: _Engine, profile: torch.Tensor | None = None) -> EngineReport:
    """The EngineReport of engine `m`; with `profile` (an (N, C, H, W) input), the per-step times of that
    input's plan (Executor.profile: median of 3 runs)."""
    times = None
    if profile is not None:
        ex = m.executor_for(tuple(profile.shape))
        xn = profile.to(device=m.device, dtype=m.dtype).permute(0, 2, 3, 1).contiguous()
        times = ex.profile(xn)
    caps = m.captures
    w = m._weights
    elem = w.dtype.itemsize if hasattr(w.dtype, "itemsize") else 4
    items = m._cache.items()
    cached = tuple(((n, h, wd), len(e.compiled.plan.steps), n * e.compiled.buffers.arena_per_sample * elem / 2**20)
                   for (n, h, wd), e in items)  # fmt: skip
    plan, steps = None, ()
    if items:
        _, last = items[-1]
        plan = _plan_record(last.compiled)
        steps = tuple(last.executor.records(times))
    return EngineReport(
        backend=m.backend.name, backend_reason=m.backend_reason, device=str(m.device),
        dtype=_dtype(m.dtype), output=m.config.output, cuda_graphs=bool(m.config.cuda_graphs),
        kernels_forced=w.context.choices.describe(),
        captures=tuple(CaptureRecord(c.dynamic, len(c.graph.guards), c.reason) for c in caps),
        dropped_captures=m.__dict__.get("_dropped_captures", 0), weights=len(w), weights_mib=w.nbytes() / 2**20,
        cached_shapes=cached, max_cached_shapes=m.config.max_cached_shapes, evictions=m._cache.evictions,
        plan=plan, steps=steps, artifact=m.__dict__.get("_artifact"), cache=m.__dict__.get("_cache_record"),
    )  # fmt: skip


def _dtype(d: torch.dtype) -> str:
    return str(d).replace("torch.", "")


def _plan_record(c: Any) -> PlanRecord:
    n, h, w = c.shape[0], c.shape[2], c.shape[3]
    steps = c.plan.steps
    return PlanRecord(
        shape=(n, h, w), pass_lines=tuple(c.pass_lines), steps_by_kind=dict(Counter(s.kind for s in steps)),
        resamples=sum(1 for s in steps for r in s.reads() if r.resample is not None),
        windows=sum(1 for s in steps for r in s.reads() if r.size is not None),
        virtual_concats=sum(1 for s in steps if s.kind == "Conv" and len(s.reads()) - (s.residual is not None) > 1),
        residuals=sum(1 for s in steps if s.kind == "Conv" and s.residual is not None),
        buffers=len(c.plan.buffers), arena_per_sample=c.buffers.arena_per_sample,
        arena_unshared_per_sample=c.buffers.total_per_sample_unshared(c.plan),
        fallbacks=sum(1 for s in steps if s.kind == "Fallback"),
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------------


def render(r: EngineReport) -> str:
    """report()'s text: every line is a rendering of a field of `r`."""
    lines = [f"FusedUNet: backend {r.backend!r} ({r.backend_reason}), device {r.device}, dtype {r.dtype}, "
             f"output {r.output!r}{', CUDA graphs' if r.cuda_graphs else ''}"]  # fmt: skip
    if r.cache is not None:
        c = r.cache
        lines.append(f"compile cache: {c.status}{f' ({c.reason})' if c.reason else ''}; entry {c.path or '-'}, "
                     f"{c.seconds:.3f} s")  # fmt: skip
    if r.artifact is not None:
        a = r.artifact
        lines.append(f"loaded from {a.path} (format {a.format_version}, written by {a.written_by}, sha256 "
                     f"{a.content_sha256[:12]}) in {a.seconds:.3f} s, no capture; packed for {a.kernels or '-'}: "
                     f"{a.stored} packed weights used as stored"
                     + (f", {a.repacked_count} packed here ({a.reason}: "
                        + ", ".join(f"{k} x{n}" for k, n in a.repacked) + ")" if a.repacked else "")
                     + ("" if a.model else "; no model: a shape no saved capture serves is refused"))  # fmt: skip
    if r.kernels_forced:
        lines.append(f"kernels forced (UNET_FAST_KERNELS): {r.kernels_forced}")
    dropped = r.dropped_captures
    if r.captures and r.captures[0].dynamic:
        lines.append(f"captures: {len(r.captures)} ({r.recaptures} re-captures due to guards"
                     f"{f', {dropped} oldest dropped' if dropped else ''})")  # fmt: skip
    else:
        lines.append(f"captures: {len(r.captures)} static, one per input size (the dynamic export failed)"
                     f"{f'; {dropped} oldest dropped' if dropped else ''}")  # fmt: skip
    for c in r.captures:
        kind = "shape-generic (dynamic N, H, W)" if c.dynamic else "static"
        lines.append(f"  {kind}, {c.guards} guards: {c.reason}")
    lines.append(f"weights: {r.weights} prepared once for ({r.backend}, {r.device}, {r.dtype}), "
                 f"{r.weights_mib:.1f} MiB, shared by every shape and thread")  # fmt: skip
    lines.append(f"cached shapes: {len(r.cached_shapes)} of at most {r.max_cached_shapes} (least recently used "
                 f"first; {r.evictions} evicted so far); arena per calling thread:")  # fmt: skip
    for (n, h, w), steps, mib in r.cached_shapes:
        lines.append(f"  N x H x W = {n}x{h}x{w}: {steps} steps, arena {mib:.2f} MiB")
    if r.plan is not None:
        lines.extend(_describe(r.plan, r.steps, r.dtype))
    return "\n".join(lines)


def _describe(p: PlanRecord, steps: tuple[StepRecord, ...], dtype: str) -> list[str]:
    n, h, w = p.shape
    lines = [f"plan for N x H x W = {n}x{h}x{w} (most recently used): {len(steps)} steps"]
    lines += ["  pass " + s for s in p.pass_lines]
    lines.append("  steps by kind: " + ", ".join(f"{k} {v}" for k, v in p.steps_by_kind.items()))
    lines.append(f"  fuse_upsample: {p.resamples} resamples and {p.windows} crops/pads read on the fly; "
                 f"{p.virtual_concats} convs read a virtual concat")  # fmt: skip
    lines.append(f"  buffers: {p.buffers}; arena {p.arena_per_sample} elements per sample "
                 f"(unshared {p.arena_unshared_per_sample})")  # fmt: skip
    lines.append(f"  fallbacks: {p.fallbacks}" + (" (run by PyTorch)" if p.fallbacks else ""))
    ours = [s for s in steps if s.backend != REFERENCE_BACKEND]
    for label in dict.fromkeys(s.label for s in ours):  # each kernel once, in plan order
        of = [s for s in ours if s.label == label]
        exact = " (exact=True: none)" if of[0].algorithm.startswith("Winograd") else ""
        what = "convs" if {s.kind for s in of} <= {"Conv", "ConvTranspose2x2"} else "steps"
        lines.append(f"  algorithms: {len(of)} {what} by {label}{exact}")
    refs = [s for s in steps if s.reference]
    if refs:
        kinds = Counter(s.kind for s in refs)
        lines.append(f"  torch reference in {dtype}: {len(refs)} steps ("
                     + ", ".join(f"{k} {v}" for k, v in kinds.items()) + "); the reason per step below")  # fmt: skip
    isas = [s.isa for s in ours if s.isa]
    for isa in dict.fromkeys(isas):
        lines.append(f"  kernel variant: {isas.count(isa)} steps run the {isa} build of the C++ CPU kernels"
                     if ours[0].backend == "cpu" else f"  device: {isas.count(isa)} steps on {isa}")  # fmt: skip
    for s in steps:
        extra = f" FALLBACK: {s.fallback}" if s.kind == "Fallback" else (f" [{s.fallback}]" if s.fallback else "")
        extra += f" ({s.label})" if s.backend != REFERENCE_BACKEND else ""
        extra += f" [variant {s.isa}]" if s.isa and s.isa not in s.label else ""
        extra += f" {s.time_ms:.3f} ms" if s.time_ms is not None else ""
        lines.append(f"  {s.index:3d} {s.kind:<16} {s.name}: {', '.join(s.reads)} -> {', '.join(s.writes)}{extra}")
    return lines
