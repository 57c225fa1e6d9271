"""Shape-generic graphs: one capture whose sizes are sympy expressions of the input's (N, H, W), turned into a
concrete OpGraph for any input shape without capturing again.

`capture_dynamic` (graph/capture.py) leaves every shape-dependent value of the graph as an expression: node
shapes, the pad amounts of milesial's F.pad, the centre-crop offsets of valid-conv U-Nets, the resample targets
of decoders that interpolate to the skip's size. `SymbolicGraph.instantiate(shape)` evaluates them (each
expression compiled once to a Python lambda) and returns a fresh OpGraph sharing every weight tensor: the
passes that decide on concrete sizes (pool fusion, concat slots) then run on it exactly as on a static capture.

Guards: where the model's Python code branches on a size (`if h % 16`), torch.export records the branch taken
as a guard (`ExportedProgram._guards_code`); `matches(shape)` evaluates them, and a shape that fails one needs
a capture of its own (the engine does it and says so in the report). Guards and size expressions are Python
source printed by torch's own sympy printers, whose vocabulary changes between releases (torch 2.14 writes
`torch.sym_max(...)` where 2.13 wrote `max(...)`; others emit `math.floor`, `torch.sym_float`,
`torch._sym_sqrt`, ...): they are evaluated in the namespace torch itself evaluates them in
(`torch.export._unlift._convert_guards_code_to_fn`: `SYMPY_INTERP` + `math` + `inf`), so every name a torch
release may print resolves. A guard that cannot be evaluated is a GuardError, never a failed guard: a
silent re-capture per shape would cost seconds and memory on every new size (issue 23).
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sympy
import torch
from torch import Tensor

from unet_fast.graph.opgraph import AtenCall, Const, Node, OpGraph, OutputTree

__all__ = ["GuardError", "SymbolicGraph", "is_symbolic", "source_namespace"]


class GuardError(RuntimeError):
    """A guard (or size expression) of a capture could not be evaluated: a bug to report, not a failed guard."""


@functools.cache
def source_namespace() -> dict[str, Any]:
    """The globals torch evaluates its printed guards in (torch.export._unlift._convert_guards_code_to_fn):
    `torch`, `math`, `inf` and its helper functions, plus Python's builtins (`max`, `min`, `abs`, `int`, as
    printed by torch.utils._sympy.printers.PythonPrinter). Built from torch's own table, so a name a new
    release prints is there when that release's table has it."""
    from torch.fx.experimental.symbolic_shapes import SYMPY_INTERP

    return {**SYMPY_INTERP, "math": math, "inf": math.inf, "nan": math.nan}


def is_symbolic(v: Any) -> bool:
    return isinstance(v, sympy.Basic)


class _Sized:
    """Stands for the input tensor in guard source (`L['x'].size()[2]`): only its sizes exist."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self._shape = shape

    def size(self, dim: int | None = None) -> Any:
        return self._shape if dim is None else self._shape[dim]

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    def dim(self) -> int:
        return len(self._shape)


class _AnyName(dict):
    """`L[...]` in guard source: every name is the input (the model takes one tensor)."""

    def __init__(self, x: _Sized) -> None:
        super().__init__()
        self.x = x

    def __missing__(self, key: str) -> _Sized:
        return self.x


@dataclass
class SymbolicGraph:
    """A captured OpGraph whose sizes may be sympy expressions of `symbols` (input dim -> symbol name)."""

    graph: OpGraph
    symbols: dict[int, str]  # input dimension (0, 2, 3) -> sympy symbol name; missing = static
    guards: list[str]  # Python source over L['x'].size(), all true at the capture's example shape
    example_shape: tuple[int, ...]
    batch_free: bool = False  # a static capture whose plan serves every batch (no fallback bakes it in)
    _fns: dict[Any, Callable[..., int]] = field(default_factory=dict, repr=False)
    _guard_fn: Callable[[Any], bool] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fns"], state["_guard_fn"], state["_lock"] = {}, None, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- which shapes this capture serves ------------------------------------------------------------
    @property
    def batch_dynamic(self) -> bool:
        return 0 in self.symbols

    def matches(self, shape: tuple[int, ...]) -> bool:
        """True when every guard holds at `shape` (and the static dims equal the example's)."""
        for d in (0, 2, 3):
            if d == 0 and self.batch_free:
                continue
            if d not in self.symbols and shape[d] != self.example_shape[d]:
                return False
        fn = self._guards()
        try:
            return bool(fn(_AnyName(_Sized(tuple(shape)))))
        except Exception as e:
            raise self._guard_error(shape, e) from e

    def failed_guards(self, shape: tuple[int, ...]) -> list[str]:
        """The guards that do not hold at `shape` (for the report: why a shape gets a capture of its own)."""
        return [g for g in self.guards if not _eval_guard(g, shape)]

    def _guards(self) -> Callable[[Any], bool]:
        fn = self._guard_fn
        if fn is None:
            src = " and ".join(f"({g})" for g in self.guards) or "True"
            try:
                fn = eval(compile(f"lambda L: {src}", "<guards>", "eval"), source_namespace())
            except SyntaxError as e:
                raise GuardError(f"a guard of the capture is not Python unet_fast can compile ({e}); guards: "
                                 f"{self.guards}. This is a bug: please report it with your torch version") from e  # fmt: skip
            self._guard_fn = fn
        return fn

    def _guard_error(self, shape: tuple[int, ...], err: Exception) -> GuardError:
        """Name the guard that raised (evaluated one by one) in a GuardError."""
        bad = "?"
        for g in self.guards:
            try:
                _eval_guard(g, shape)
            except Exception as e:
                bad, err = g, e
                break
        return GuardError(f"cannot evaluate the capture's guard `{bad}` at input shape {tuple(shape)} "
                          f"({type(err).__name__}: {err}); torch {torch.__version__}. This is a bug in unet_fast's "
                          "guard evaluation, not a failed guard: please report it")  # fmt: skip

    def drop_pad_guards(self, samples: int = 24) -> int:
        """Drop guards that only say whether a zero-pad amount is 0, for a model known to pad on both sides of
        such a branch (our UNet's `_join`; the engine calls this for it only): a window step pads by any
        amount >= 0, so both sides give the same graph. A guard `E == 0` / `E != 0` is dropped when E equals
        a pad amount of the graph at `samples` shapes around the example. Returns how many were dropped."""
        pads = [p for n in self.graph.nodes if n.op == "window" for p in n.attrs.get("pad", ()) if is_symbolic(p)]
        if not pads or not self.guards:
            return 0
        import random

        rng = random.Random(0)
        shapes = [tuple(self.example_shape)]
        for _ in range(samples):
            shapes.append(tuple(s if d == 1 or d not in self.symbols else max(1, rng.randint(s // 2, 2 * s + 7))
                                for d, s in enumerate(self.example_shape)))  # fmt: skip
        pad_values = [[self.value(p, sh) for sh in shapes] for p in pads]
        kept = []
        for g in self.guards:
            lhs = _zero_test(g)
            if lhs is not None:
                vals = [_eval_guard(lhs, sh) for sh in shapes]
                if any(vals == pv for pv in pad_values):
                    continue
            kept.append(g)
        dropped = len(self.guards) - len(kept)
        self.guards, self._guard_fn = kept, None
        return dropped

    # -- a concrete graph for one shape ----------------------------------------------------------------
    def value(self, expr: Any, shape: tuple[int, ...]) -> int:
        fn = self._fns.get(expr)
        if fn is None:
            with self._lock:
                fn = self._fns.get(expr) or self._compile(expr)
                self._fns[expr] = fn
        return fn(*(shape[d] for d in sorted(self.symbols)))

    def _compile(self, expr: Any) -> Callable[..., int]:
        from torch.utils._sympy.printers import PythonPrinter

        names = [self.symbols[d] for d in sorted(self.symbols)]
        unknown = {str(s) for s in expr.free_symbols} - set(names)
        if unknown:
            raise ValueError(f"a size of the captured graph depends on {sorted(unknown)}, not only on the input shape")
        src = f"lambda {', '.join(names) or '_'}: int({PythonPrinter().doprint(expr)})"
        return eval(compile(src, "<size>", "eval"), source_namespace())

    def instantiate(self, shape: tuple[int, ...]) -> OpGraph:
        """A concrete OpGraph for an input of `shape` (nodes are new; weight tensors are shared). Identity
        windows (a pad or crop of zero at this size) are dropped, so a size where nothing is padded gets the
        same graph a static capture at that size would."""

        def sub(v: Any) -> Any:
            if isinstance(v, sympy.Basic):
                return self.value(v, shape)
            if isinstance(v, (Tensor, str, int, float, bool)) or v is None:
                return v
            if isinstance(v, tuple):
                return tuple(sub(e) for e in v)
            if isinstance(v, list):
                return [sub(e) for e in v]
            if isinstance(v, dict):
                return {k: sub(e) for k, e in v.items()}
            if isinstance(v, AtenCall):
                return AtenCall(v.target, sub(v.args), sub(v.kwargs))
            return v

        g = self.graph
        new: dict[int, Node] = {}
        nodes: list[Node] = []
        for n in g.nodes:
            inputs = [new[id(i)] for i in n.inputs]
            shp = None if n.shape is None else tuple(sub(s) for s in n.shape)
            if n.op == "input":
                shp = tuple(shape)
            attrs = sub(n.attrs)
            if (n.op == "window" and tuple(attrs["offset"]) == (0, 0) and inputs[0].shape is not None
                    and tuple(attrs["size"]) == tuple(inputs[0].shape[2:])):  # fmt: skip
                new[id(n)] = inputs[0]
                continue
            m = Node(n.op, inputs, attrs, shp, n.name, list(n.fused))
            new[id(n)] = m
            nodes.append(m)
        tree = g.tree
        if tree is not None:
            tree = OutputTree(tree.spec, [Const(sub(leaf.value)) if isinstance(leaf, Const) else leaf
                                          for leaf in tree.leaves])  # fmt: skip
        return OpGraph(nodes, new[id(g.input)], [new[id(o)] for o in g.outputs], tree, g.input_update)


def _eval_guard(source: str, shape: tuple[int, ...]) -> Any:
    """One guard (or a part of one) at `shape`; raises what the evaluation raises."""
    return _guard_fn(source)(_AnyName(_Sized(tuple(shape))))


@functools.lru_cache(maxsize=4096)
def _guard_fn(source: str) -> Callable[[Any], Any]:
    return eval(compile(f"lambda L: {source}", "<guard>", "eval"), source_namespace())


def _zero_test(guard: str) -> str | None:
    """'E' of a guard 'E == 0' / 'E != 0' / '(E) == 0' (None otherwise)."""
    g = guard.strip()
    for op in (" == 0", " != 0"):
        if g.endswith(op):
            e = g[: -len(op)].strip()
            return e[1:-1] if e.startswith("(") and e.endswith(")") and _balanced(e[1:-1]) else e
    return None


def _balanced(s: str) -> bool:
    depth = 0
    for ch in s:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0

