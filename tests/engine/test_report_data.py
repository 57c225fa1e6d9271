"""FusedUNet.report_data(): the report as data (engine/report.py), what report() renders; per-step times when
profiled; and a re-capture compiles its plan once (issue 24's leftovers)."""

from __future__ import annotations

import torch
from engine_helpers import randomize_bn
from test_new_shapes import BranchesOnSize

import unet_fast
from unet_fast.engine import compiler, module
from unet_fast.engine.report import EngineReport, render


def test_report_is_the_rendering_of_its_data() -> None:
    m = randomize_bn(unet_fast.UNet(3, 2, 8, 2, "batch", "transpose", head="softmax"), seed=2)
    fast = unet_fast.optimize(m, torch.randn(1, 3, 32, 32), backend="cpu")
    data = fast.report_data()
    assert isinstance(data, EngineReport) and fast.report() == render(data) == str(data)
    assert data.backend == "cpu" and data.dtype == "float32" and data.plan is not None
    assert len(data.steps) == sum(data.plan.steps_by_kind.values())
    assert [s.index for s in data.steps] == list(range(len(data.steps)))
    assert all(s.kernel.startswith("cpu.") and s.backend == "cpu" and s.isa and not s.fallback for s in data.steps)
    assert all(s.time_ms is None for s in data.steps)  # nothing measured unless asked
    for s in data.steps:  # every step's line names its kernel's label and, where not in it, its ISA
        (line,) = [ln for ln in fast.report().splitlines() if ln.startswith(f"  {s.index:3d} {s.kind} ")]
        assert s.label in line and s.isa in line, line


def test_profile_times_every_step_of_that_plan() -> None:
    m = randomize_bn(unet_fast.UNet(3, 2, 8, 2, "batch", "transpose", head="softmax"), seed=3)
    fast = unet_fast.optimize(m, torch.randn(1, 3, 32, 32), backend="cpu")
    data = fast.report_data(profile=torch.randn(2, 3, 24, 40))
    assert data.plan is not None and data.plan.shape == (2, 24, 40)
    assert data.steps and all(s.time_ms is not None and s.time_ms > 0 for s in data.steps)
    assert " ms" in render(data).splitlines()[-1]


def test_a_recapture_compiles_its_plan_once(monkeypatch) -> None:
    """A shape that fails a guard is captured again; its plan was compiled twice (once to check the capture, once
    for the cache entry): now once."""
    calls: list[tuple[int, ...]] = []
    real = compiler.compile_plan

    def counted(cap, shape, passes):
        calls.append(tuple(shape))
        return real(cap, shape, passes)

    monkeypatch.setattr(module, "compile_plan", counted)
    m = randomize_bn(BranchesOnSize())
    fast = unet_fast.optimize(m, torch.randn(1, 3, 32, 20), backend="torch")
    assert calls == [(1, 3, 32, 20)]
    with torch.no_grad():
        fast(torch.randn(1, 3, 33, 21))  # H 33: the other side of the guard, a re-capture
    assert len(fast.captures) == 2
    assert calls == [(1, 3, 32, 20), (1, 3, 33, 21)], calls
