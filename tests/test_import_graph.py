"""The package's import graph has no cycles, and the layers import downwards only (shared/DESIGN.md, "Data flow,
one direction"; issue 24). Read from the source with `ast`, so every import counts: module level, inside
functions (a lazy import is still a dependency) and under `if TYPE_CHECKING:`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "unet_fast"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    """module -> the unet_fast modules it imports. `from pkg import name` is an edge to pkg.name when that is a
    module, else to pkg; importing a module does not count as importing its parent packages (every module
    would then depend on unet_fast/__init__.py)."""
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for t in targets:
                while t and t not in files:  # `import unet_fast.kernels.cpu as c` names a module; attributes do not
                    t = t.rpartition(".")[0]
                if t.startswith("unet_fast") and t != mod:
                    graph[mod].add(t)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


GRAPH = _graph()


def test_the_import_graph_is_read() -> None:
    assert "unet_fast.kernels.registry" in GRAPH["unet_fast.backends.executor"]
    assert "unet_fast.kernels.cpu_desc" in GRAPH["unet_fast.kernels.cpu_bf16"]  # a `from x import y as z`
    assert "unet_fast.engine.report" in GRAPH["unet_fast.engine.module"]  # `from pkg import module as name`


def test_no_import_cycles() -> None:
    cycles = _cycles(GRAPH)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


# layer -> the layers it may import (its own included). Lower layers never import higher ones.
LAYERS = {
    "graph.types": set(),  # the IR's value types: a leaf
    "models": {"models"},
    "graph": {"graph", "graph.types", "models", "model_guard"},  # model_guard: a leaf (the training-mode rule)
    "kernels": {"kernels", "graph", "graph.types", "_ext"},  # graph: the IR's step classes (graph/ir.py)
    "backends": {"backends", "kernels", "graph", "graph.types", "_ext"},
    "engine": {"engine", "backends", "kernels", "graph", "graph.types", "models", "model_guard", "_ext"},
}


def _layer(mod: str) -> str:
    rest = mod.removeprefix("unet_fast.")
    if rest == "graph.types":
        return rest
    return rest.split(".")[0]


@pytest.mark.parametrize("layer", list(LAYERS))
def test_layers_import_downwards_only(layer: str) -> None:
    allowed = LAYERS[layer]
    bad = sorted((m, t) for m, ts in GRAPH.items() if _layer(m) == layer for t in ts if _layer(t) not in allowed)
    assert not bad, f"{layer} imports outside {sorted(allowed)}: {bad}"


def test_nothing_below_the_tools_imports_the_bench() -> None:
    """The benchmark package is a tool over the engine (bench -> engine, never engine / export / kernels -> bench):
    the weight randomisers every layer uses live in models/weights.py."""
    tools = ("unet_fast.bench", "unet_fast.commands", "unet_fast.cli")
    bad = sorted((m, t) for m, ts in GRAPH.items() if not m.startswith(tools) for t in ts if t.startswith("unet_fast.bench"))
    assert not bad, bad
