"""The registry conformance suite's parametrisation: every registered kernel of a step kind (kernels/registry.py),
of every backend that runs here, x every dtype it declares x the cases whose step its `supports` takes. A
kernel that runs one row of the CPU variant table is one kernel per row, so "x every runnable ISA" is part of
"every registered kernel"; rows this CPU cannot run (e.g. AMX on AMD) are not parametrised. Triton kernels run
in the interpreter here (marked slow, small cases only); CUDA kernels where a GPU exists."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import pytest
import torch

from unet_fast.backends import BACKENDS
from unet_fast.graph.ir import Step
from unet_fast.kernels import registry


def _backends() -> list[str]:
    names = ["torch", "cpu"]
    if os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available():
        names.append("triton")
    if torch.cuda.is_available():
        names.append("cuda")
    out = []
    for name in names:
        dev = BACKENDS[name].default_device()
        if BACKENDS[name].unavailable_reason(dev):
            continue
        try:
            registry.load(name)
        except ImportError:
            continue
        out.append(name)
    return out


BACKEND_NAMES = _backends()


def device_of(k: registry.Kernel) -> str:
    return str(BACKENDS[k.backend].default_device())


def kernels_of(step: type[Step]) -> list[registry.Kernel]:
    """The registered kernels of `step` on the backends that run here, runnable rows only."""
    return [k for b in BACKEND_NAMES for k in registry.kernels(b, step) if not registry.unavailable(k)]


def params(step: type[Step], cases: Iterable[Any], make_step: Callable[[Any], Step],
           small: Callable[[Any], bool] = lambda case: True) -> list:  # fmt: skip
    """pytest params (kernel name, dtype, case): each supported combination once. Triton kernels (the
    interpreter) only on the `small` cases, marked slow."""
    out = []
    cases = list(cases)
    for k in kernels_of(step):
        for dtype in k.dtypes:
            for case in cases:
                if k.backend == "triton" and not small(case):
                    continue
                if k.supports(make_step(case), dtype) is not None:
                    continue
                marks = (pytest.mark.slow,) if k.backend == "triton" else ()
                dt = str(dtype).replace("torch.", "")
                out.append(pytest.param(k.name, dtype, case, id=f"{k.name}-{dt}-{case}", marks=marks))
    return out


def scores_dtype(k: registry.Kernel, dtype: torch.dtype) -> torch.dtype:
    """The dtype a Head kernel writes its scores in (the engine allocates its output buffer so)."""
    return k.scores_dtype(dtype) if k.scores_dtype is not None else dtype


def weight_of(w: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The weight as an engine of `dtype` holds it, in fp32 (what the reference computes with; every reduced
    precision kernel rounds its weights to the storage dtype once)."""
    return w.to(dtype).float()
