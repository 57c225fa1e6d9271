"""Guards and size expressions evaluate with every name torch prints, and an error is an error (issue 23, item 3).

torch 2.14 prints guards with `torch.sym_max(...)` where 2.13 printed `max(...)`; the guard evaluation could
not name it, read the NameError as a failed guard and re-captured the model at every new size (26-65x the
steady latency on the first call, +1.5 GiB over 40 sizes). Here: torch's own guard printer
(ShapeGuardPythonPrinter, what ExportedProgram._guards_code is written with) and size printer (PythonPrinter)
over every sympy function of torch.utils._sympy.functions that sizes and guards are built from, evaluated by
SymbolicGraph at many shapes and compared with sympy's own value; the real guards of each model family on
this torch; and an unknown name is a GuardError, never a failed guard or a silent re-capture.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import sympy
import torch
import torch.utils._sympy.functions as sf
from torch.fx.experimental.symbolic_shapes import ShapeGuardPythonPrinter
from torch.utils._sympy.printers import PythonPrinter

from unet_fast.graph.capture import capture_dynamic
from unet_fast.graph.opgraph import Node, OpGraph
from unet_fast.graph.symbolic import GuardError, SymbolicGraph
from unet_fast.models.unet import UNet

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))

N, H, W = sympy.symbols("s0 s1 s2", integer=True, positive=True)
SOURCES = {N: "L['x'].size()[0]", H: "L['x'].size()[2]", W: "L['x'].size()[3]"}
SHAPES = [(b, 3, h, w) for b in (1, 2, 5) for h, w in ((1, 1), (7, 33), (16, 16), (37, 45), (64, 20), (255, 128))]

# every function sizes and guards are built from (torch.utils._sympy.functions), in the forms export writes
SIZES = {
    "FloorDiv": sf.FloorDiv(H, 2),
    "PythonMod": sf.PythonMod(W, 16),
    "Mod": sf.Mod(H + 3, 8),
    "Max": sf.Max(1, sf.FloorDiv(H, 4)),
    "Min": sf.Min(W, 2 * H + 1),
    "Max3": sf.Max(1, H - 2, sf.FloorDiv(W, 3)),
    "CeilToInt": sf.CeilToInt(sf.IntTrueDiv(H, 3)),
    "FloorToInt": sf.FloorToInt(sf.IntTrueDiv(W + 1, 4)),
    "TruncToInt": sf.TruncToInt(sf.FloatTrueDiv(sf.ToFloat(H), sympy.Float(2.5))),
    "RoundToInt": sf.RoundToInt(sf.FloatTrueDiv(sf.ToFloat(W), sympy.Float(3.0))),
    "CleanDiv": sf.CleanDiv(4 * H, 4),
    "PowByNatural": sf.PowByNatural(2, sf.FloorDiv(N, 2)),
    "sqrt": sf.FloorToInt(sf.OpaqueUnaryFn_sqrt(sf.ToFloat(H * W))),
    "Abs": sympy.Abs(H - W),
    "product": sf.Max(1, sf.FloorDiv(W, 2)) * sf.Max(1, sf.FloorDiv(H, 2)),  # torch 2.14's pooled-size guards
}
GUARDS = {
    "Eq": sympy.Eq(sf.PythonMod(H, 16), 0),
    "Ne": sympy.Ne(sf.Max(1, sf.FloorDiv(W, 2)) * sf.Max(1, sf.FloorDiv(H, 2)), 1),
    "Ge": sympy.Ge(sf.CeilToInt(sf.IntTrueDiv(H, 3)), 5),
    "Lt": sympy.Lt(sf.Min(H, W), 40),
    "And": sympy.And(sympy.Ge(H, 8), sympy.Le(W, 200)),
    "Or": sympy.Or(sympy.Eq(N, 1), sympy.Gt(H, 30)),
    "Not": sympy.Not(sympy.Eq(sf.Mod(W, 2), 0)),
}


class _Source:
    def __init__(self, name: str) -> None:
        self.name = name


class _Printer(ShapeGuardPythonPrinter):
    def print_source(self, source: Any) -> str:
        return source.name


def _guard_source(expr: Any) -> str:
    sources = {s: [_Source(v)] for s, v in SOURCES.items()}
    return _Printer(sources, lambda src: src.name, sources).doprint(expr)


def _sym(guards: list[str]) -> SymbolicGraph:
    x = Node("input", [], {}, (N, 3, H, W), "x")
    return SymbolicGraph(OpGraph([x], x, x), {0: "s0", 2: "s1", 3: "s2"}, guards, (2, 3, 16, 16))


def _truth(expr: Any, shape: tuple[int, ...]) -> Any:
    return expr.subs({N: shape[0], H: shape[2], W: shape[3]})


@pytest.mark.parametrize("name", sorted(SIZES))
def test_size_expressions_printed_by_torch_evaluate(name: str) -> None:
    expr = SIZES[name]
    sym = _sym([])
    for shape in SHAPES:
        want = _truth(expr, shape)
        assert sym.value(expr, shape) == int(want), (name, PythonPrinter().doprint(expr), shape, want)


@pytest.mark.parametrize("name", sorted(GUARDS) + sorted(SIZES))
def test_guards_printed_by_torch_evaluate(name: str) -> None:
    """Guards as torch writes them (torch.sym_max / sym_min on 2.14, max / min on 2.13, math.floor, ...)."""
    expr = GUARDS[name] if name in GUARDS else sympy.Ge(SIZES[name], 3)
    src = _guard_source(expr)
    sym = _sym([src])
    for shape in SHAPES:
        assert sym.matches(shape) is bool(_truth(expr, shape)), (name, src, shape)
    assert sym.failed_guards(SHAPES[0]) == ([] if _truth(expr, SHAPES[0]) else [src])


@pytest.mark.parametrize("guard", ["torch.sym_nonexistent(L['x'].size()[2], 1) > 0", "foo(L['x'].size()[2])",
                                   "L['x'].size()[9] == 1", "L['x'].size()[2] // 0 == 1"])  # fmt: skip
def test_a_guard_that_cannot_be_evaluated_is_an_error(guard: str) -> None:
    sym = _sym(["L['x'].size()[2] >= 1", guard])
    with pytest.raises(GuardError, match=r"cannot evaluate the capture's guard .* not a failed guard"):
        sym.matches((2, 3, 16, 16))


def test_a_guard_that_does_not_compile_is_an_error() -> None:
    with pytest.raises(GuardError, match="not Python"):
        _sym(["L['x'].size()[2] >="]).matches((2, 3, 16, 16))


def _families() -> dict[str, tuple[torch.nn.Module, tuple[int, ...]]]:
    from milesial_unet import MilesialUNet
    from monai_like import BasicUNetLike
    from smp_like import SmpLikeUnet

    from unet_fast.engine.compiler import _target

    return {
        "unet_same": (_target(UNet(3, 2, 8, 3)), (2, 3, 64, 64)),
        "unet_valid": (_target(UNet(3, 2, 8, 2, padding="valid")), (2, 3, 92, 92)),
        "unet_bilinear": (_target(UNet(3, 2, 8, 3, None, "bilinear")), (2, 3, 64, 48)),
        "milesial": (MilesialUNet(3, 2, True, base=8), (2, 3, 64, 64)),
        "monai": (BasicUNetLike(3, 2, (8, 8, 16, 32, 32, 8)), (2, 3, 48, 64)),
        "smp": (SmpLikeUnet("resnet18", 3, 2, decoder_channels=(32, 16, 16, 8, 8)), (2, 3, 64, 64)),
    }


@pytest.mark.parametrize("family", ["unet_same", "unet_valid", "unet_bilinear", "milesial", "monai", "smp"])
def test_every_guard_torch_writes_for_our_families_evaluates(family: str) -> None:
    """The real guards of this torch's export: each evaluates (True at the example) at many sizes."""
    model, shape = _families()[family]
    g, guards = capture_dynamic(model.eval(), torch.randn(shape))
    sym = SymbolicGraph(g, {d: str(g.input.shape[d]) for d in (0, 2, 3)}, guards, shape)
    assert sym.matches(shape), sym.failed_guards(shape)
    for s in [(b, 3, h, w) for b in (1, 3) for h, w in ((shape[2] + 16, shape[3]), (shape[2] + 1, shape[3] + 7),
                                                         (shape[2] * 2, shape[3] // 2 + 1), (5, 9))]:  # fmt: skip
        sym.matches(s)  # True or False, never an exception
        sym.failed_guards(s)
