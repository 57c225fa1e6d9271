"""The plan compiler (pure: no device, no backend): capture a model once, then derive a Plan for any input
shape from that capture by rules.

`capture_model` exports the model once with a dynamic batch/height/width (graph/capture.py) and runs the
passes that never look at a size (output mode, BN folding) on the shape-generic graph. `compile_plan` turns
it into one shape's Plan: evaluate the graph's size expressions (graph/symbolic.py), run the size-dependent
passes, lower, plan the buffers: milliseconds, no export. Where the model's code branches on a size the
export recorded a guard; a shape failing one is captured again (`Capture.reason` says why, the report lists
it). When a dynamic export fails the model is captured at each shape, as a static graph.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from unet_fast.graph.capture import BATCH_AGNOSTIC_FALLBACKS, CaptureError, capture, capture_dynamic
from unet_fast.graph.ir import Plan
from unet_fast.graph.lower import lower
from unet_fast.graph.opgraph import OpGraph, OutputTree, assemble_outputs
from unet_fast.graph.passes import PASSES, run_shape_free_passes, run_shape_passes
from unet_fast.graph.passes.output_mode import model_gives_output
from unet_fast.graph.planner import BufferPlan, plan_buffers
from unet_fast.graph.quiet import quiet_torch_logs
from unet_fast.graph.symbolic import GuardError, SymbolicGraph, is_symbolic
from unet_fast.model_guard import TrainingModeError
from unet_fast.models.unet import UNet

__all__ = ["Capture", "CompiledPlan", "capture_model", "compile_plan", "size_error"]


@dataclass
class Capture:
    """One capture of the model: shape-generic, or static (one H x W) when a dynamic export failed."""

    graph: SymbolicGraph
    pass_lines: list[str]  # report lines of the shape-free passes
    reason: str  # why this capture exists ("optimize", "a guard failed at ...", ...)
    dynamic: bool
    model_output: bool = False  # the model's own final op already gives the requested output mode

    def matches(self, shape: tuple[int, ...]) -> bool:
        return self.graph.matches(shape)

    def tensors(self) -> list:
        """The weight tensors of this capture (what a WeightStore prepares from them)."""
        return [t for n in self.graph.graph.nodes for t in (n.attrs.get("weight"), n.attrs.get("bias"))
                if isinstance(t, torch.Tensor)]  # fmt: skip


@dataclass
class CompiledPlan:
    shape: tuple[int, ...]
    plan: Plan
    buffers: BufferPlan
    pass_lines: list[str]
    capture: Capture
    tree: OutputTree | None = None  # the model's return structure over plan.outputs (None: one bare tensor)
    input_update: int | None = None  # plan output holding the input's new value (the model writes its input)

    def assemble(self, values: list) -> Any:
        """The model's return value from the plan's output values."""
        return assemble_outputs(self.tree, values, [i for i in range(len(values)) if i != self.input_update])

    def leaf_of(self, i: int) -> int | None:
        """The first leaf of the model's return value (pytree order) that plan output `i` gives."""
        if self.tree is None:
            return 0 if i != self.input_update else None
        return next((j for j, leaf in enumerate(self.tree.leaves) if leaf == i), None)


class _TraceSafe(nn.Module):
    """Our UNet captured through `run_layers(trace_safe=True)`: the decoder's pad is always in the graph (zero
    where nothing was floored), so one capture serves even and odd sizes without a guard on `if dh or dw`.
    Input sizes are checked by the closed form `UNet.output_size` instead (see `check_size`)."""

    def __init__(self, model: UNet) -> None:
        super().__init__()
        self.model = model
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        return self.model.run_layers(x, trace_safe=True)


def _target(model: nn.Module) -> nn.Module:
    if isinstance(model, UNet) and type(model).forward is UNet.forward:
        return _TraceSafe(model)
    return model


def check_size(model: nn.Module, shape: tuple[int, ...]) -> None:
    """Closed-form size check where the model has one (our UNet: ValueError naming the nearest valid sizes)."""
    if isinstance(model, UNet):
        model.output_size(int(shape[2]), int(shape[3]))


def capture_model(model: nn.Module, example: Tensor, output: str, passes: frozenset[str] | None,
                  reason: str, valid: tuple[int, ...] | None = None) -> Capture:  # fmt: skip
    """Capture `model` (a private eval-mode copy) around `example`. Raises ValueError for models the engine
    cannot take (training mode, several inputs, writes into buffers) and for an example the model cannot run
    (naming the nearest sizes; `valid`: a shape known to work, for the hint), GuardError for a guard that
    cannot be evaluated."""
    target = _target(model)
    try:
        g, guards = capture_dynamic(target, example)
        symbols = {d: str(g.input.shape[d]) for d in (0, 2, 3) if is_symbolic(g.input.shape[d])}
        sym = SymbolicGraph(g, symbols, guards, tuple(example.shape))
        if isinstance(target, _TraceSafe):
            # `_join` evaluates `dh or dw` before `always_pad`: guards on whether a pad amount is zero, though
            # both sides pad (by zero or more). Only here, where the code is known: another model's branch on
            # the same value could do something else on each side.
            sym.drop_pad_guards()
        own = model_gives_output(sym.graph, output)
        lines = run_shape_free_passes(sym.graph, output, passes)
        sym.instantiate(tuple(example.shape))  # every size expression evaluates (no data-dependent sizes)
        return Capture(sym, lines, reason, dynamic=True, model_output=own)
    except GuardError:
        raise  # our bug, never a reason to degrade to static captures
    except ValueError as e:
        if isinstance(e, (TrainingModeError, CaptureError)):
            raise
        why = f"{type(e).__name__}: {e}"
    except Exception as e:  # the dynamic export failed: capture at this shape only
        why = f"{type(e).__name__}: {e}"
    try:
        g = capture(target, example)
    except ValueError:
        raise
    except Exception as e:  # the model itself fails at this example (a size it cannot take): say so, once
        raise ValueError(size_error(model, tuple(example.shape), e, valid)) from e
    agnostic = all(_batch_agnostic(n) for n in g.nodes if n.op == "fallback")
    sym = SymbolicGraph(g, {}, [], tuple(example.shape), batch_free=agnostic)
    own = model_gives_output(sym.graph, output)
    lines = run_shape_free_passes(sym.graph, output, passes)
    return Capture(sym, lines, f"{reason}; static (dynamic export failed: {why[:200]})", dynamic=False,
                   model_output=own)


def compile_plan(cap: Capture, shape: tuple[int, ...], passes: frozenset[str] | None) -> CompiledPlan:
    """The Plan and buffer plan of one input shape, from a capture that matches it."""
    g: OpGraph = cap.graph.instantiate(shape)
    lines = cap.pass_lines + run_shape_passes(g, passes)
    on = set(PASSES) if passes is None else set(passes)
    plan = lower(g, fuse_reads="fuse_upsample" in on, virtual_concat="eliminate_concat" in on)
    return CompiledPlan(tuple(shape), plan, plan_buffers(plan), lines, cap, tree=g.tree, input_update=g.input_update)


def _batch_agnostic(n) -> bool:
    """A static capture serves every batch when no fallback bakes the batch into its arguments."""
    if n.attrs.get("fn") is not None and isinstance(n.attrs["fn"], nn.Module):
        return True  # the whole model run by PyTorch
    return str(n.attrs.get("target", "")) in BATCH_AGNOSTIC_FALLBACKS


def size_error(model: nn.Module, shape: tuple[int, ...], err: Exception,
               valid: tuple[int, ...] | None = None) -> str:  # fmt: skip
    """Name the nearest input sizes the model accepts (tried on the meta device: no compute, torch's logging
    silenced). `valid`: a shape the model is known to take (the example's): each side is searched with the
    other side at its valid size, so a bad width does not hide the valid heights. Only for models without a
    closed form (check_size), on the error path."""
    _, c, h, w = shape
    meta = copy.deepcopy(model).to("meta")

    def ok(hh: int, ww: int) -> bool:
        try:
            with quiet_torch_logs(), torch.no_grad():
                meta(torch.empty(1, c, hh, ww, device="meta"))
            return True
        except Exception:
            return False

    def nearest(size: int, other: int, axis: int) -> str:
        found = []
        for d in range(1, 65):
            for s in (size - d, size + d):
                if s >= 1 and (ok(s, other) if axis == 0 else ok(other, s)):
                    found.append(s)
            if found:
                break
        return " or ".join(map(str, sorted(found))) if found else "none within 64"

    msg = f"the model cannot take an input of {h}x{w} ({type(err).__name__}: {str(err)[:200]})"
    if not ok(h, w):
        if valid is None:  # no size known to work (optimize's own example): the nearest square one
            s = next((s for d in range(0, 65) for s in (max(h, w) + d, min(h, w) - d) if s >= 1 and ok(s, s)), None)
            valid = (1, c, s, s) if s is not None else (1, c, h, w)
        vh, vw = int(valid[2]), int(valid[3])
        hint_h = str(h) if ok(h, vw) else nearest(h, vw, 0)
        hint_w = str(w) if ok(vh, w) else nearest(w, vh, 1)
        msg += f"; nearest valid height: {hint_h}, width: {hint_w}"
    return msg
