"""Small graphs for the pass tests: capture a tiny module, run passes, lower, execute on the torch backend."""

from __future__ import annotations

import torch
from torch import nn

from unet_fast.backends.executor import Executor
from unet_fast.graph.capture import capture
from unet_fast.graph.ir import Plan
from unet_fast.graph.lower import lower
from unet_fast.graph.opgraph import OpGraph
from unet_fast.graph.planner import plan_buffers


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    from unet_fast.bench.workloads import randomize_bn

    return randomize_bn(model, seed)


def graph_of(model: nn.Module, x: torch.Tensor) -> OpGraph:
    return capture(model.eval(), x)


def run_plan(plan: Plan, x: torch.Tensor) -> torch.Tensor:
    """Execute `plan` with the reference kernels on poisoned buffers; returns NCHW (or the class map)."""
    ex = Executor(plan, plan_buffers(plan), "torch", x.device, torch.float32)
    ex.poison = True
    out = ex.run(x.permute(0, 2, 3, 1).contiguous())
    return out.permute(0, 3, 1, 2) if plan.output_kind == "activation" else out


def lower_and_run(g: OpGraph, x: torch.Tensor, **kw: bool) -> tuple[Plan, torch.Tensor]:
    plan = lower(g, **kw)
    return plan, run_plan(plan, x)


def kinds(plan: Plan) -> list[str]:
    return [s.kind for s in plan.steps]


def assert_close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
