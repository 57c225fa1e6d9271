"""Timing: warm up, repeat, report the median with min and max (shared/BENCHMARKING.md).

CPU calls are timed with perf_counter. CUDA calls are timed with CUDA events around the call and a
synchronize before reading them; `cuda_graph` captures a call once so the timed runs replay it, which
removes Python and launch overhead (what a deployed small-batch server does)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Timing:
    median_ms: float
    min_ms: float
    max_ms: float
    repeats: int

    @classmethod
    def from_samples(cls, samples_ms: list[float]) -> Timing:
        if not samples_ms:
            raise ValueError("no timing samples: repeats must be >= 1")
        return cls(statistics.median(samples_ms), min(samples_ms), max(samples_ms), len(samples_ms))


def time_once_cpu(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def time_once_cuda(fn: Callable[[], object]) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end)


def timer_for(device: str) -> Callable[[Callable[[], object]], float]:
    return time_once_cuda if device == "cuda" else time_once_cpu


def time_cpu(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> Timing:
    for _ in range(warmup):
        fn()
    return Timing.from_samples([time_once_cpu(fn) for _ in range(repeats)])


def time_cuda(fn: Callable[[], object], repeats: int = 20, warmup: int = 3) -> Timing:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    return Timing.from_samples([time_once_cuda(fn) for _ in range(repeats)])


def cuda_graph(fn: Callable[[], torch.Tensor], warmup: int = 2) -> Callable[[], torch.Tensor]:
    """Capture `fn` (fixed input tensors, one output tensor) into a CUDA graph; returns a replay callable
    whose result is the graph's static output. Raises RuntimeError when the call cannot be captured."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up on a side stream, as capture requires
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = fn()

    def replay() -> torch.Tensor:
        graph.replay()
        return static_out

    return replay
