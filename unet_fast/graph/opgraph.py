"""The captured graph in normalised form: a small op vocabulary over NCHW values, before lowering to a Plan.

Capture (graph/capture.py) turns ATen nodes into these ops; passes (graph/passes/) rewrite or mark them; the
lowering (graph/lower.py) turns them into Plan steps. `OpGraph.evaluate` is a plain-PyTorch interpreter of the
graph, so every pass can be checked numerically on its own: evaluate before == evaluate after == the model.

Ops and their attrs
- input                                       the model input (one 4-D tensor)
- conv            weight OIHW, bias, stride, padding, dilation, groups, act, negative_slope;
                  inputs [x] or [x, residual] when attrs["residual"] is True
- conv_transpose  weight IOHW, bias, stride, padding, output_padding, dilation, groups, act, negative_slope
- batch_norm      mean, var, gamma, beta, eps
- act             kind (relu | leaky_relu | silu), negative_slope
- max_pool        kernel, stride, padding, dilation, ceil_mode
- resample        mode (nearest | bilinear), size, align_corners
- window          offset (top, left), size (h, w): crop (slice) or zero pad (F.pad), composed
- cat             (channels)
- add
- softmax | sigmoid | argmax                   over channels
- head            weight [K, C], bias, op (logits | softmax | sigmoid | argmax): the fused head
- fallback        fn (a picklable ATen call), reason; the value may be non-4-D ("raw")
Passes add markers: max_pool["epilogue"] (computed by its conv), cat["slots"] (producers write into one
buffer) / cat["virtual"] (read as a virtual concat), resample/window["virtual"] (read on the fly).

Outputs: a graph has one or more output nodes (`outputs`). `tree` is the structure of the model's return value
(torch.export's out_spec: a tuple, list, dict, nested, ...) with, per leaf, the output computing it or a
constant; `assemble` rebuilds that structure from the output values, so the engine returns what the model
returns (`(y,)` stays a tuple, `{"out": y}` a dict). `input_update` names the output holding the new value of
the model's input where its forward writes into its input (`x.mul_(2)`): the engine writes it back into the
caller's tensor, as the model does.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(eq=False)
class Node:
    op: str
    inputs: list[Node]
    attrs: dict[str, Any]
    shape: tuple[int, ...] | None  # NCHW for activations; None for raw values
    name: str
    fused: list[str] = field(default_factory=list)  # what passes folded into this node, for the report

    def __repr__(self) -> str:
        return f"Node({self.op} {self.name} {self.shape})"


@dataclass(frozen=True)
class Const:
    """A leaf of the model's return value that is not a tensor: None, a number, a string (or a sympy
    expression of the input sizes, for a size the model returns)."""

    value: Any


@dataclass
class OutputTree:
    """The structure of the model's return value: `spec` (a torch.utils._pytree.TreeSpec) and, per leaf in
    pytree order, the index into OpGraph.outputs that computes it, or a Const."""

    spec: Any
    leaves: list[int | Const]

    # pickled as plain (type, context, children) tuples: unpickling a TreeSpec itself makes torch 2.13 warn
    # about its own deprecated LeafSpec on every load (a FusedUNet is pickled to Ray workers)
    def __getstate__(self) -> dict[str, Any]:
        return {"spec": _plain_spec(self.spec), "leaves": self.leaves}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.spec, self.leaves = _tree_spec(state["spec"]), state["leaves"]

    def paths(self) -> list[str]:
        """Per leaf, where it sits in the return value, as pytree writes it ("[0]", "['out']", "['aux'][1]")."""
        from torch.utils import _pytree as pytree

        tree = pytree.tree_unflatten(list(range(len(self.leaves))), self.spec)
        flat, _ = pytree.tree_flatten_with_path(tree)
        return [pytree.keystr(path) for path, _ in flat]


def _plain_spec(spec: Any) -> Any:
    """A TreeSpec as nested (type, context, children) tuples; None for a leaf."""
    if spec.is_leaf():
        return None
    return (spec.type, spec.context, [_plain_spec(c) for c in spec.children()])


def _tree_spec(plain: Any) -> Any:
    from torch.utils import _pytree as pytree

    if plain is None:
        return pytree.treespec_leaf()
    typ, context, children = plain
    return pytree.TreeSpec(typ, context, [_tree_spec(c) for c in children])


def assemble_outputs(tree: OutputTree | None, values: list[Any], results: list[int] | None = None) -> Any:
    """The model's return value from the graph's (or plan's) output values: `tree` rebuilt with them, or
    for a bare-tensor graph (tree None) the one result (`results`: its index, default 0)."""
    if tree is None:
        return values[results[0] if results else 0]
    from torch.utils import _pytree as pytree

    return pytree.tree_unflatten([leaf.value if isinstance(leaf, Const) else values[leaf] for leaf in tree.leaves],
                                 tree.spec)  # fmt: skip


@dataclass
class OpGraph:
    """`outputs`: the graph's output nodes (a Node is accepted for one output); see the module docstring for
    `tree` and `input_update`."""

    nodes: list[Node]
    input: Node
    outputs: list[Node]
    tree: OutputTree | None = None  # None: one output, returned bare
    input_update: int | None = None  # index into outputs: the new value of the input, written back

    def __post_init__(self) -> None:
        if isinstance(self.outputs, Node):
            self.outputs = [self.outputs]

    # -- structure ---------------------------------------------------------------------------------
    @property
    def output(self) -> Node:
        """The one output of a single-output graph (ValueError for several: passes then loop over
        `result_indices`)."""
        if len(self.outputs) != 1:
            raise ValueError(f"the graph has {len(self.outputs)} outputs, not one")
        return self.outputs[0]

    @output.setter
    def output(self, node: Node) -> None:
        if len(self.outputs) != 1:
            raise ValueError(f"the graph has {len(self.outputs)} outputs, not one")
        self.outputs = [node]

    def result_indices(self) -> list[int]:
        """Indices into `outputs` of the tensors the model returns (not the input write-back)."""
        if self.tree is None:
            return [i for i in range(len(self.outputs)) if i != self.input_update]
        return list(dict.fromkeys(leaf for leaf in self.tree.leaves if isinstance(leaf, int)))

    def output_name(self, i: int) -> str:
        """Where output `i` sits in the model's return value ("" for a bare tensor), for messages."""
        if self.tree is None:
            return ""
        paths = self.tree.paths()
        return " and ".join(p for p, leaf in zip(paths, self.tree.leaves, strict=True) if leaf == i) or f"#{i}"

    def assemble(self, values: list[Any]) -> Any:
        """The model's return value from the output values (in `outputs` order)."""
        return assemble_outputs(self.tree, values, self.result_indices())

    def users(self, node: Node) -> list[Node]:
        users = [n for n in self.nodes if any(i is node for i in n.inputs)]
        return users

    def is_output(self, node: Node) -> bool:
        return any(node is o for o in self.outputs)

    def replace(self, old: Node, new: Node) -> None:
        """Route every use of `old` to `new` and drop `old`."""
        for n in self.nodes:
            n.inputs = [new if i is old else i for i in n.inputs]
        self.outputs = [new if o is old else o for o in self.outputs]
        self.nodes = [n for n in self.nodes if n is not old]
        self.toposort()

    def toposort(self) -> None:
        """Stable topological order (passes may give a node a new, later input)."""
        order: list[Node] = []
        seen: set[int] = set()
        pos = {id(n): i for i, n in enumerate(self.nodes)}

        def visit(n: Node) -> None:
            if id(n) in seen:
                return
            for i in sorted(n.inputs, key=lambda m: pos.get(id(m), -1)):
                visit(i)
            seen.add(id(n))
            order.append(n)

        for n in self.nodes:
            visit(n)
        self.nodes = order

    def prune(self) -> None:
        """Drop nodes no output depends on."""
        live: set[int] = set()
        stack = list(self.outputs)
        while stack:
            n = stack.pop()
            if id(n) not in live:
                live.add(id(n))
                stack.extend(n.inputs)
        self.nodes = [n for n in self.nodes if id(n) in live or n is self.input]

    def count(self, op: str) -> int:
        return sum(n.op == op for n in self.nodes)

    # -- reference interpreter -----------------------------------------------------------------------
    def evaluate(self, x: Tensor) -> Any:
        """What the model returns for `x` (and, where the model writes into its input, `x` written too)."""
        env: dict[int, Any] = {id(self.input): x}
        for n in self.nodes:
            if n is not self.input:
                env[id(n)] = evaluate_node(n, [env[id(i)] for i in n.inputs])
        values = [env[id(o)] for o in self.outputs]
        if self.input_update is not None:
            with torch.no_grad():
                x.copy_(values[self.input_update])
        return self.assemble(values)


def _act(y: Tensor, kind: str, slope: float) -> Tensor:
    if kind == "none":
        return y
    if kind == "relu":
        return torch.relu(y)
    if kind == "leaky_relu":
        return F.leaky_relu(y, slope)
    if kind == "silu":
        return F.silu(y)
    raise ValueError(f"unknown activation {kind!r}")


def apply_window(x: Tensor, offset: tuple[int, int], size: tuple[int, int]) -> Tensor:
    """Window at `offset` of `size` over NCHW `x`; outside the source reads zero (F.pad semantics)."""
    (top, left), (h, w) = offset, size
    sh, sw = x.shape[2], x.shape[3]
    pt, pl, pb, pr = max(0, -top), max(0, -left), max(0, top + h - sh), max(0, left + w - sw)
    if pt or pl or pb or pr:
        x = F.pad(x, [pl, pr, pt, pb])
    return x[:, :, top + pt : top + pt + h, left + pl : left + pl + w]


def _like(t: Tensor | None, x: Tensor) -> Tensor | None:
    return None if t is None else t.to(device=x.device, dtype=x.dtype)


def evaluate_node(n: Node, args: list[Any]) -> Any:
    a = n.attrs
    op = n.op
    if op == "conv":
        x = args[0]
        y = F.conv2d(x, _like(a["weight"], x), _like(a["bias"], x),
                     a["stride"], a["padding"], a["dilation"], a["groups"])  # fmt: skip
        if a.get("residual"):
            y = y + args[1]
        return _act(y, a["act"], a["negative_slope"])
    if op == "conv_transpose":
        x = args[0]
        y = F.conv_transpose2d(x, _like(a["weight"], x), _like(a["bias"], x),
                               a["stride"], a["padding"], a["output_padding"], a["groups"], a["dilation"])  # fmt: skip
        return _act(y, a["act"], a["negative_slope"])
    if op == "batch_norm":
        x = args[0]
        return F.batch_norm(x, _like(a["mean"], x), _like(a["var"], x), _like(a["gamma"], x), _like(a["beta"], x),
                            False, 0.0, a["eps"])  # fmt: skip
    if op == "act":
        return _act(args[0], a["kind"], a["negative_slope"])
    if op == "max_pool":
        return F.max_pool2d(args[0], a["kernel"], a["stride"], a["padding"], a["dilation"], a["ceil_mode"])
    if op == "resample":
        kw = {"align_corners": a["align_corners"]} if a["mode"] == "bilinear" else {}
        return F.interpolate(args[0], size=a["size"], mode=a["mode"], **kw)
    if op == "window":
        return apply_window(args[0], a["offset"], a["size"])
    if op == "cat":
        return torch.cat(args, dim=1)
    if op == "add":
        return args[0] + args[1]
    if op == "softmax":
        return torch.softmax(args[0], dim=1)
    if op == "sigmoid":
        return torch.sigmoid(args[0])
    if op == "argmax":
        return args[0].argmax(dim=1)
    if op == "head":
        x = args[0]
        y = F.conv2d(x, _like(a["weight"], x)[:, :, None, None], _like(a["bias"], x))
        return {"logits": lambda t: t, "softmax": lambda t: torch.softmax(t, 1), "sigmoid": torch.sigmoid,
                "argmax": lambda t: t.argmax(1)}[a["op"]](y)  # fmt: skip
    if op == "fallback":
        return a["fn"](*args)
    raise ValueError(f"cannot evaluate op {op!r}")


class _Ref:
    """Placeholder for the i-th tensor input inside an AtenCall's argument template."""

    def __init__(self, index: int) -> None:
        self.index = index

    def __repr__(self) -> str:
        return f"${self.index}"


@dataclass
class AtenCall:
    """A picklable `target(*args, **kwargs)` with _Ref placeholders filled from the call's inputs."""

    target: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def __call__(self, *inputs: Any) -> Any:
        def fill(v: Any) -> Any:
            if isinstance(v, _Ref):
                return inputs[v.index]
            if isinstance(v, (list, tuple)):
                return type(v)(fill(e) for e in v)
            if isinstance(v, Tensor) and inputs and isinstance(inputs[0], Tensor):
                return v.to(inputs[0].device)
            return v

        return self.target(*fill(self.args), **{k: fill(v) for k, v in self.kwargs.items()})

    def describe(self) -> str:
        name = getattr(self.target, "__name__", None) or str(self.target)
        if self.target is operator.getitem:
            name = "getitem"
        return str(getattr(self.target, "_name", name))
