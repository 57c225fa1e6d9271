"""No import cycles (issue 24): the import graph of unet_fast, read from the source with `ast` (every import
statement, at module level or inside a function, except those under `if TYPE_CHECKING:`, which never
run), has no strongly connected component of more than one module. A lazy import inside a function is
still a dependency: it only hides a cycle from the interpreter until the function runs.

The tools layer (cli, commands, inference, distributed, demo) must have none. Cycles elsewhere are listed in
KNOWN_CYCLES, owned by the work that removes them (issue 24): a new one fails, and so does a listed one
that is gone (delete it from the list then)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "unet_fast"
TOOLS = ("unet_fast.cli", "unet_fast.commands", "unet_fast.inference", "unet_fast.distributed", "unet_fast.demo")
# Found on 2026-12-04 (branch tools23, from main at 6f00c90), each a set of modules importing each other.
# (engine/module <-> engine/report, named in issue 24, is a type-only import: engine/report.py imports
# FusedUNet under TYPE_CHECKING, which never runs.)
KNOWN_CYCLES: set[frozenset[str]] = {
    frozenset({"unet_fast.kernels.cpu", "unet_fast.kernels.cpu_bf16", "unet_fast.kernels.cpu_bf16_ops"}),
}


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool) -> list[str]:
    """Absolute names imported by a module: `import a.b` -> a.b; `from a.b import c` -> a.b.c (the caller
    maps a name that is not a module to the module defining it, a.b); relative imports resolved against the
    module's package. Parent packages that Python initialises on the way are not counted: `from a.b import
    c` depends on the module a.b.c, not on a/__init__.py."""
    names: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            names.extend(f"{source}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        targets = set()
        for imported in _imports(ast.parse(path.read_text()), name, path.name == "__init__.py"):
            # the module itself if it is one of ours, else the package that defines the imported name
            while imported and imported not in files:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.add(frozenset(component))
    return found


def test_the_cycle_finder_finds_cycles_and_nothing_else() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e2"}, "e2": {"e"}, "f": {"a"}}
    assert cycles(graph) == {frozenset({"a", "b", "c"}), frozenset({"e", "e2"})}
    tree = ast.parse("import os\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x.y\n"
                     "def f():\n    from .sibling import g\n")  # fmt: skip
    assert _imports(tree, "pkg.mod", False) == ["os", "typing.TYPE_CHECKING", "pkg.sibling.g"]


def test_no_import_cycles_in_the_tools_layer() -> None:
    tools = [c for c in cycles(import_graph()) if any(m == t or m.startswith(t + ".") for m in c for t in TOOLS)]
    assert not tools, [sorted(c) for c in tools]


def test_import_cycles_elsewhere_are_the_known_ones() -> None:
    found = cycles(import_graph())
    new, gone = found - KNOWN_CYCLES, KNOWN_CYCLES - found
    assert not new, f"new import cycles: {[sorted(c) for c in new]}"
    assert not gone, f"cycles removed (delete them from KNOWN_CYCLES): {[sorted(c) for c in gone]}"
