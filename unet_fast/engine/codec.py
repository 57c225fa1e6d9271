"""JSON encoding of a capture (graph/symbolic.SymbolicGraph over a graph/opgraph.OpGraph) and of packed
weights, for engine files (engine/artifact.py). Decoding builds objects of an allowlist only and never runs
code from the file.

What a capture holds, and how it is written:
- values: None, bool, int, float (non-finite as {"$float": "inf"}), str; a tuple is a JSON array, a list
  {"$list": [...]}, a dict {"$dict": [[key, value], ...]}; torch.dtype / device / memory_format / layout by
  name; a tensor {"$t": [storage, dtype, offset, shape, stride]} (a view of one of the file's storages, so
  tensors that shared memory share it again, and the weight store's keys line up).
- sympy size expressions as trees of allowlisted classes ({"$sym": "Add", "args": [...]}: sympy's Integer,
  Rational, Symbol (a plain identifier, with its assumptions), Add, Mul, Pow, Mod, Min, Max, floor, ceiling,
  Abs, and torch's integer functions of torch.utils._sympy.functions). Rebuilt by calling those classes.
- guards: Python source that graph/symbolic.py evaluates. Read from a file, each is parsed with `ast` and
  accepted only if every node is arithmetic, a comparison, a boolean operator, a call of an allowlisted
  function (max, min, abs, int, float, math.*, torch.sym_*), a constant, or `L['x'].size()[d]`; anything
  else (an attribute like `__class__`, a name like `__import__`, a lambda, a large power) is an
  EngineFileError. Symbol names must be identifiers (they are printed into the compiled size functions).
- fallback steps: an ATen call by its operator name (aten namespace only), `operator.getitem`, or one
  result of a multi-output ATen op; their arguments are values as above, with `$ref` for graph inputs.
- the return structure (a pytree spec of tuple / list / dict / OrderedDict / None leaves).
- packed weights: frozen dataclasses of the kernel modules (registry.KERNEL_MODULES) whose fields are
  values as above ({"$packed": "unet_fast.kernels.cpu.ConvTransposeWeight", "fields": {...}}).

Everything else (an nn.Module, a closure, a namedtuple or a model's own output class) cannot be written:
`Unencodable` names where it sits.
"""

from __future__ import annotations

import ast
import collections
import dataclasses
import importlib
import math
import operator
import re
from collections.abc import Callable
from typing import Any

import sympy
import torch
from torch import Tensor

from unet_fast.graph.capture import _Item
from unet_fast.graph.opgraph import AtenCall, Const, Node, OpGraph, OutputTree, _Ref

__all__ = ["Decoder", "Encoder", "GuardRejected", "Unencodable", "check_guard", "packed_modules"]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
OPS = ("input", "conv", "conv_transpose", "batch_norm", "act", "max_pool", "resample", "window", "cat", "add",
       "softmax", "sigmoid", "argmax", "head", "fallback")  # graph/opgraph.py's vocabulary  # fmt: skip
_DTYPES = {str(d).replace("torch.", ""): d for d in (
    torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.uint8, torch.int16,
    torch.int32, torch.int64, torch.bool, torch.complex64)}  # fmt: skip
_MEMORY_FORMATS = {"contiguous_format": torch.contiguous_format, "channels_last": torch.channels_last,
                   "preserve_format": torch.preserve_format}  # fmt: skip
_LAYOUTS = {"strided": torch.strided}
_CONTAINERS = {"tuple": tuple, "list": list, "dict": dict, "OrderedDict": collections.OrderedDict}


class Unencodable(ValueError):
    """A value of a capture or a packed weight that an engine file cannot hold without pickling code."""


class GuardRejected(ValueError):
    """A guard read from a file that is not the arithmetic guards are made of."""


def _sympy_classes() -> dict[str, type]:
    from torch.utils._sympy import functions as tf

    out: dict[str, type] = {c.__name__: c for c in (
        sympy.Integer, sympy.Rational, sympy.Add, sympy.Mul, sympy.Pow, sympy.Mod, sympy.Min, sympy.Max,
        sympy.floor, sympy.ceiling, sympy.Abs)}  # fmt: skip
    for name, c in vars(tf).items():
        if isinstance(c, type) and issubclass(c, sympy.Basic) and c.__module__ == tf.__name__ and _IDENT.match(name):
            out[f"torch.{name}"] = c
    return out


_SYMPY: dict[str, type] | None = None


def sympy_classes() -> dict[str, type]:
    global _SYMPY
    if _SYMPY is None:
        _SYMPY = _sympy_classes()
    return _SYMPY


def packed_modules() -> set[str]:
    """The modules whose dataclasses may appear as packed weights: the kernel modules of every backend."""
    from unet_fast.kernels import registry

    return {m for mods in registry.KERNEL_MODULES.values() for m in mods}


# ---------------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------------


class Encoder:
    """Turns captures and packed weights into JSON; collects the tensors' storages (`storages`, uint8 CPU
    tensors, each once however many tensors view it)."""

    def __init__(self) -> None:
        self.storages: list[Tensor] = []
        self._index: dict[tuple[int, int, str], int] = {}
        self._keep: list[Any] = []  # storages kept alive while encoding (their data_ptr is the key)

    # -- tensors ---------------------------------------------------------------------------------------
    def tensor(self, t: Tensor) -> dict[str, Any]:
        if t.layout != torch.strided or t.is_sparse or t.is_quantized or (t.requires_grad and t.grad_fn is not None):
            raise Unencodable(f"a {t.layout} / quantized / autograd tensor")
        dt = str(t.dtype).replace("torch.", "")
        if dt not in _DTYPES:
            raise Unencodable(f"a tensor of dtype {t.dtype}")
        st = t.untyped_storage()
        key = (st.data_ptr(), st.nbytes(), str(t.device))
        i = self._index.get(key)
        if i is None:
            raw = torch.empty(0, dtype=torch.uint8, device=t.device).set_(st)
            raw = raw.cpu() if raw.device.type != "cpu" else raw
            self._keep.append(st)
            self.storages.append(raw.detach())
            i = self._index[key] = len(self.storages) - 1
        return {"$t": [i, dt, int(t.storage_offset()), list(t.shape), list(t.stride())]}

    # -- values ----------------------------------------------------------------------------------------
    def value(self, v: Any, where: str) -> Any:
        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, int):
            return int(v)
        if isinstance(v, float):
            return v if math.isfinite(v) else {"$float": repr(v)}
        if isinstance(v, Tensor):
            try:
                return self.tensor(v)
            except Unencodable as e:
                raise Unencodable(f"{where}: {e}") from None
        if isinstance(v, torch.dtype):
            return {"$dtype": str(v).replace("torch.", "")}
        if isinstance(v, torch.device):
            return {"$device": str(v)}
        if isinstance(v, torch.memory_format):
            name = next((k for k, f in _MEMORY_FORMATS.items() if f == v), None)
            if name is None:
                raise Unencodable(f"{where}: memory format {v}")
            return {"$memory_format": name}
        if isinstance(v, torch.layout):
            if v != torch.strided:
                raise Unencodable(f"{where}: layout {v}")
            return {"$layout": "strided"}
        if isinstance(v, sympy.Basic):
            return self.sym(v, where)
        if isinstance(v, _Ref):
            return {"$ref": v.index}
        if isinstance(v, Const):
            return {"$const": self.value(v.value, where)}
        if isinstance(v, AtenCall):
            return {"$call": self.callable(v.target, where), "args": self.value(v.args, where),
                    "kwargs": self.value(v.kwargs, where)}  # fmt: skip
        if isinstance(v, tuple) and type(v) is tuple:
            return [self.value(e, where) for e in v]
        if isinstance(v, list):  # list and torch.fx's immutable_list (an ATen op takes either)
            return {"$list": [self.value(e, where) for e in v]}
        if isinstance(v, dict) and type(v) in (dict, collections.OrderedDict):
            return {"$dict": [[self.value(k, where), self.value(e, where)] for k, e in v.items()]}
        if isinstance(v, torch.nn.Module):
            raise Unencodable(f"{where}: the module {type(v).__name__} itself (PyTorch runs it as it is: a "
                              "whole-model or whole-layer fallback holds Python code, which an engine file never "
                              "stores)")  # fmt: skip
        raise Unencodable(f"{where}: a {type(v).__module__}.{type(v).__qualname__}, which an engine file cannot "
                          "store without pickling code")  # fmt: skip

    def callable(self, fn: Any, where: str) -> Any:
        if isinstance(fn, torch._ops.OpOverload):
            ns = fn.namespace
            if ns != "aten":
                raise Unencodable(f"{where}: the custom operator {fn} (only aten operators are stored by name)")
            return {"aten": fn._schema.name.split("::")[-1], "overload": fn._overloadname or "default"}
        if fn is operator.getitem:
            return {"python": "operator.getitem"}
        if isinstance(fn, _Item):
            return {"item": self.callable(fn.op, where), "index": int(fn.index)}
        raise Unencodable(f"{where}: the callable {getattr(fn, '__qualname__', type(fn).__name__)} (only aten "
                          "operators are stored by name; a Python function would have to be pickled)")  # fmt: skip

    def sym(self, e: sympy.Basic, where: str) -> Any:
        if isinstance(e, sympy.Symbol):
            # the assumptions it was made with (integer, positive): they steer how sympy simplifies around it
            given = getattr(e, "_assumptions_orig", None) or e.assumptions0
            return {"$symbol": e.name, "assumptions": {k: v for k, v in given.items() if isinstance(v, bool)}}
        if isinstance(e, sympy.Integer):
            return {"$sym": "Integer", "args": [int(e)]}
        if isinstance(e, sympy.Rational):
            return {"$sym": "Rational", "args": [int(e.p), int(e.q)]}
        classes = sympy_classes()
        name = next((k for k, c in classes.items() if type(e) is c), None)
        if name is None:
            raise Unencodable(f"{where}: the size expression {e} uses {type(e).__name__}")
        return {"$sym": name, "args": [self.sym(a, where) for a in e.args]}

    # -- graphs ----------------------------------------------------------------------------------------
    def graph(self, g: OpGraph, where: str) -> dict[str, Any]:
        index = {id(n): i for i, n in enumerate(g.nodes)}
        nodes = []
        for i, n in enumerate(g.nodes):
            at = f"{where}.nodes[{i}] ({n.op} {n.name})"
            nodes.append({"op": n.op, "name": n.name, "inputs": [index[id(m)] for m in n.inputs],
                          "attrs": {k: self.value(v, f"{at}.{k}") for k, v in n.attrs.items()},
                          "shape": None if n.shape is None else self.value(tuple(n.shape), at),
                          "fused": list(n.fused)})  # fmt: skip
        return {"nodes": nodes, "input": index[id(g.input)], "outputs": [index[id(o)] for o in g.outputs],
                "tree": None if g.tree is None else self.tree(g.tree, where), "input_update": g.input_update}  # fmt: skip

    def tree(self, t: OutputTree, where: str) -> dict[str, Any]:
        return {"spec": self._spec(t.spec, where), "leaves": [self.value(leaf, f"{where}.tree") for leaf in t.leaves]}

    def _spec(self, spec: Any, where: str) -> Any:
        if spec.is_leaf():
            return None
        name = next((k for k, c in _CONTAINERS.items() if spec.type is c), None)
        if name is None:
            raise Unencodable(f"{where}: the model returns a {getattr(spec.type, '__qualname__', spec.type)} (a "
                              "namedtuple or class of its own), which an engine file cannot rebuild without its "
                              "code; return a tuple, list or dict")  # fmt: skip
        return {"type": name, "context": self.value(spec.context, f"{where}.tree"),
                "children": [self._spec(c, where) for c in spec.children()]}  # fmt: skip

    # -- packed weights ----------------------------------------------------------------------------------
    def packed(self, v: Any, where: str) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            cls = type(v)
            name = f"{cls.__module__}.{cls.__qualname__}"
            if cls.__module__ not in packed_modules() or not _IDENT.match(cls.__qualname__):
                raise Unencodable(f"{where}: packed weight type {name} is not a kernel module's dataclass")
            return {"$packed": name, "fields": {f.name: self.packed(getattr(v, f.name), f"{where}.{f.name}")
                                                for f in dataclasses.fields(v) if f.init}}  # fmt: skip
        return self.value(v, where)


# ---------------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------------


class Decoder:
    """Rebuilds what Encoder wrote, from `storages` (uint8 CPU tensors). Every error is a ValueError naming
    where in the header it is (engine/artifact.py turns it into an EngineFileError)."""

    def __init__(self, storages: list[Tensor]) -> None:
        self.storages = storages
        self._tensors: dict[tuple, Tensor] = {}

    def tensor(self, ref: Any, where: str) -> Tensor:
        if not (isinstance(ref, list) and len(ref) == 5 and _ints([ref[0], ref[2]]) and isinstance(ref[1], str)
                and isinstance(ref[3], list) and isinstance(ref[4], list) and _ints(ref[3]) and _ints(ref[4])
                and len(ref[3]) == len(ref[4]) <= 8):  # fmt: skip
            raise ValueError(f"{where}: malformed tensor reference {str(ref)[:80]}")
        si, dt, off, shape, stride = ref
        key = (si, dt, off, tuple(shape), tuple(stride))
        t = self._tensors.get(key)
        if t is not None:
            return t
        if not 0 <= si < len(self.storages) or dt not in _DTYPES:
            raise ValueError(f"{where}: tensor of storage {si} / dtype {dt!r} is not in the file")
        dtype = _DTYPES[dt]
        raw = self.storages[si]
        item = dtype.itemsize
        if off < 0 or any(s < 0 for s in shape) or any(s < 0 for s in stride):
            raise ValueError(f"{where}: negative size, stride or offset")
        numel = math.prod(shape)
        last = off + sum((s - 1) * st for s, st in zip(shape, stride, strict=True)) if numel else off
        if numel and (last + 1) * item > raw.numel():
            raise ValueError(f"{where}: a {dt} tensor {shape} at {off} reaches past its storage ({raw.numel()} bytes)")
        base = raw.untyped_storage()
        start = raw.storage_offset()  # bytes: the storage view starts at this byte of the mapped file
        if start % item:
            raise ValueError(f"{where}: storage {si} is not aligned for {dt}")
        t = torch.empty(0, dtype=dtype).set_(base, start // item + off, tuple(shape), tuple(stride))
        self._tensors[key] = t
        return t

    def value(self, v: Any, where: str) -> Any:
        if v is None or isinstance(v, (bool, str, int, float)):
            return v
        if isinstance(v, list):
            return tuple(self.value(e, where) for e in v)
        if not isinstance(v, dict) or len(v) < 1:
            raise ValueError(f"{where}: unexpected {type(v).__name__} {str(v)[:60]}")
        if "$t" in v:
            return self.tensor(v["$t"], where)
        if "$list" in v:
            return [self.value(e, where) for e in _list(v["$list"], where)]
        if "$dict" in v:
            items = _list(v["$dict"], where)
            if not all(isinstance(kv, list) and len(kv) == 2 for kv in items):
                raise ValueError(f"{where}: malformed dict")
            return {_hashable(self.value(k, where), where): self.value(e, where) for k, e in items}
        if "$float" in v:
            if v["$float"] not in ("inf", "-inf", "nan"):
                raise ValueError(f"{where}: bad float {v['$float']!r}")
            return float(v["$float"])
        if "$dtype" in v:
            return _lookup(_DTYPES, v["$dtype"], "dtype", where)
        if "$device" in v:
            d = v["$device"]
            if not isinstance(d, str) or not re.match(r"^(cpu|cuda|meta)(:\d{1,3})?$", d):
                raise ValueError(f"{where}: bad device {d!r}")
            return torch.device(d)
        if "$memory_format" in v:
            return _lookup(_MEMORY_FORMATS, v["$memory_format"], "memory format", where)
        if "$layout" in v:
            return _lookup(_LAYOUTS, v["$layout"], "layout", where)
        if "$ref" in v:
            if not _ints([v["$ref"]]) or not 0 <= v["$ref"] < 64:
                raise ValueError(f"{where}: bad input reference")
            return _Ref(v["$ref"])
        if "$const" in v:
            return Const(self.value(v["$const"], where))
        if "$call" in v:
            args, kwargs = self.value(v.get("args", []), where), self.value(v.get("kwargs", {"$dict": []}), where)
            if not isinstance(args, tuple) or not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
                raise ValueError(f"{where}: malformed call arguments")
            return AtenCall(self.callable(v["$call"], where), args, kwargs)
        if "$sym" in v or "$symbol" in v:
            return self.sym(v, where)
        raise ValueError(f"{where}: unknown value tag {sorted(v)[:3]}")

    def callable(self, c: Any, where: str) -> Callable[..., Any]:
        if not isinstance(c, dict):
            raise ValueError(f"{where}: malformed callable")
        if "aten" in c:
            name, overload = c.get("aten"), c.get("overload")
            if not (isinstance(name, str) and isinstance(overload, str) and _IDENT.match(name)
                    and _IDENT.match(overload)) or (name.startswith("_") and name.startswith("__")):  # fmt: skip
                raise ValueError(f"{where}: bad operator name {name!r}.{overload!r}")
            # a registry lookup (torch.ops resolves a name among the registered operators): nothing from the
            # file is imported or run
            try:
                op = getattr(getattr(torch.ops.aten, name), overload)
            except (AttributeError, RuntimeError):
                raise ValueError(f"{where}: aten.{name}.{overload} is not an operator of torch "
                                 f"{torch.__version__}") from None  # fmt: skip
            if not isinstance(op, torch._ops.OpOverload):
                raise ValueError(f"{where}: aten.{name}.{overload} is not an operator")
            return op
        if c.get("python") == "operator.getitem":
            return operator.getitem
        if "item" in c:
            if not _ints([c.get("index")]):
                raise ValueError(f"{where}: bad item index")
            return _Item(self.callable(c["item"], where), int(c["index"]))
        raise ValueError(f"{where}: unknown callable {str(c)[:60]}")

    def sym(self, v: Any, where: str, depth: int = 0) -> sympy.Basic:
        if depth > 64 or not isinstance(v, dict):
            raise ValueError(f"{where}: malformed size expression")
        if "$symbol" in v:
            name, assume = v["$symbol"], v.get("assumptions", {})
            from sympy.core.assumptions import _assume_defined as known
            if not isinstance(name, str) or not _IDENT.match(name) or name.startswith("__"):
                raise ValueError(f"{where}: bad symbol name {str(name)[:40]!r}")
            if not isinstance(assume, dict) or not all(k in known and isinstance(b, bool) for k, b in assume.items()):
                raise ValueError(f"{where}: bad symbol assumptions")
            return sympy.Symbol(name, **assume)
        name, args = v.get("$sym"), v.get("args")
        if not isinstance(args, list) or len(args) > 64:
            raise ValueError(f"{where}: malformed size expression")
        if name == "Integer":
            if not _ints(args) or len(args) != 1 or abs(args[0]) >= 1 << 63:
                raise ValueError(f"{where}: bad integer")
            return sympy.Integer(args[0])
        if name == "Rational":
            if not _ints(args) or len(args) != 2 or args[1] == 0 or max(abs(a) for a in args) >= 1 << 63:
                raise ValueError(f"{where}: bad rational")
            return sympy.Rational(args[0], args[1])
        cls = sympy_classes().get(name) if isinstance(name, str) else None
        if cls is None:
            raise ValueError(f"{where}: size-expression function {str(name)[:40]!r} is not allowed")
        parts = [self.sym(a, where, depth + 1) for a in args]
        if cls is sympy.Pow and not (len(parts) == 2 and isinstance(parts[1], sympy.Integer)
                                     and abs(int(parts[1])) <= 64):  # fmt: skip
            raise ValueError(f"{where}: a power with exponent {parts[1] if len(parts) > 1 else '?'} is not a size "
                             "expression")  # fmt: skip
        # the saved expression was already in sympy's canonical form: rebuild it as it was, without simplifying
        # again (also faster: Add's flattening imports half of sympy on first use)
        try:
            return cls(*parts, evaluate=False)
        except TypeError:
            return cls(*parts)

    def graph(self, d: Any, where: str) -> OpGraph:
        if not isinstance(d, dict) or not isinstance(d.get("nodes"), list):
            raise ValueError(f"{where}: malformed graph")
        nodes: list[Node] = []
        for i, nd in enumerate(d["nodes"]):
            at = f"{where}.nodes[{i}]"
            if not isinstance(nd, dict) or nd.get("op") not in OPS or not isinstance(nd.get("name"), str):
                raise ValueError(f"{at}: unknown op {str(nd.get('op') if isinstance(nd, dict) else nd)[:40]!r}")
            ins = nd.get("inputs")
            if not isinstance(ins, list) or not _ints(ins) or not all(0 <= j < i for j in ins):
                raise ValueError(f"{at}: inputs must name earlier nodes")  # also rules out cycles
            attrs = nd.get("attrs")
            if not isinstance(attrs, dict):
                raise ValueError(f"{at}: malformed attrs")
            shape = nd.get("shape")
            fused = nd.get("fused", [])
            if not isinstance(fused, list) or not all(isinstance(s, str) for s in fused):
                raise ValueError(f"{at}: malformed fused list")
            nodes.append(Node(nd["op"], [nodes[j] for j in ins],
                              {str(k): self.value(a, f"{at}.{k}") for k, a in attrs.items()},
                              None if shape is None else self.value(shape, at), nd["name"], list(fused)))  # fmt: skip
            if nd["op"] == "fallback" and not isinstance(nodes[-1].attrs.get("fn"), AtenCall):
                raise ValueError(f"{at}: a fallback step without an operator")
        inp, outs = d.get("input"), d.get("outputs")
        if not _ints([inp]) or not 0 <= inp < len(nodes) or nodes[inp].op != "input":
            raise ValueError(f"{where}: bad input node")
        if not isinstance(outs, list) or not outs or not _ints(outs) or not all(0 <= o < len(nodes) for o in outs):
            raise ValueError(f"{where}: bad outputs")
        upd = d.get("input_update")
        if upd is not None and (not _ints([upd]) or not 0 <= upd < len(outs)):
            raise ValueError(f"{where}: bad input_update")
        tree = None if d.get("tree") is None else self.tree(d["tree"], len(outs), where)
        return OpGraph(nodes, nodes[inp], [nodes[o] for o in outs], tree, upd)

    def tree(self, d: Any, n_outputs: int, where: str) -> OutputTree:
        if not isinstance(d, dict) or not isinstance(d.get("leaves"), list):
            raise ValueError(f"{where}: malformed output structure")
        leaves = [self.value(x, f"{where}.tree") for x in d["leaves"]]
        for leaf in leaves:
            if not (isinstance(leaf, Const) or (isinstance(leaf, int) and 0 <= leaf < n_outputs)):
                raise ValueError(f"{where}: bad output leaf {leaf!r}")
        spec = self._spec(d.get("spec"), where, 0)
        if spec.num_leaves != len(leaves):
            raise ValueError(f"{where}: the output structure has {spec.num_leaves} leaves, {len(leaves)} given")
        return OutputTree(spec, leaves)

    def _spec(self, d: Any, where: str, depth: int) -> Any:
        from torch.utils import _pytree as pytree

        if d is None:
            return pytree.treespec_leaf()
        if depth > 32 or not isinstance(d, dict) or d.get("type") not in _CONTAINERS:
            raise ValueError(f"{where}: bad output container {str(d)[:60]}")
        typ = _CONTAINERS[d["type"]]
        context = self.value(d.get("context"), where)
        if typ in (dict, collections.OrderedDict):
            context = list(context) if isinstance(context, (list, tuple)) else None
            if context is None:
                raise ValueError(f"{where}: a dict output without keys")
        else:
            context = None
        children = d.get("children")
        if not isinstance(children, list):
            raise ValueError(f"{where}: malformed output structure")
        return pytree.TreeSpec(typ, context, [self._spec(c, where, depth + 1) for c in children])

    def packed(self, v: Any, where: str) -> Any:
        if isinstance(v, dict) and "$packed" in v:
            name, fields = v["$packed"], v.get("fields")
            module, _, qual = str(name).rpartition(".")
            if module not in packed_modules() or not _IDENT.match(qual) or not isinstance(fields, dict):
                raise ValueError(f"{where}: packed weight type {str(name)[:80]!r} is not allowed")
            cls = getattr(importlib.import_module(module), qual, None)  # a module of ours, named in the registry
            if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
                raise ValueError(f"{where}: {name} is not a packed weight type of this unet_fast")
            names = {f.name for f in dataclasses.fields(cls) if f.init}
            if set(fields) - names or {f.name for f in dataclasses.fields(cls)
                                       if f.init and f.default is dataclasses.MISSING
                                       and f.default_factory is dataclasses.MISSING} - set(fields):  # fmt: skip
                raise ValueError(f"{where}: {name} fields {sorted(fields)} do not match {sorted(names)}")
            return cls(**{k: self.packed(f, f"{where}.{k}") for k, f in fields.items()})
        return self.value(v, where)


def _ints(xs: Any) -> bool:
    return isinstance(xs, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in xs)


def _list(v: Any, where: str) -> list:
    if not isinstance(v, list):
        raise ValueError(f"{where}: malformed list")
    return v


def _hashable(k: Any, where: str) -> Any:
    try:
        hash(k)
    except TypeError:
        raise ValueError(f"{where}: unhashable dict key") from None
    return k


def _lookup(table: dict[str, Any], name: Any, what: str, where: str) -> Any:
    if not isinstance(name, str) or name not in table:
        raise ValueError(f"{where}: unknown {what} {str(name)[:40]!r}")
    return table[name]


# ---------------------------------------------------------------------------------------------------
# Guards read from a file
# ---------------------------------------------------------------------------------------------------

_SAFE_BUILTINS = {"max", "min", "abs", "int", "float", "bool", "round"}
_TORCH_FUNCTIONS = {"sym_max", "sym_min", "sym_float", "sym_int", "sym_not", "sym_ite", "sym_sqrt", "_sym_sqrt",
                    "sym_sum"}  # fmt: skip
_NODES = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd, ast.BinOp,
          ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.Compare, ast.Eq, ast.NotEq,
          ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Call, ast.Name, ast.Load, ast.Attribute, ast.Subscript,
          ast.Constant, ast.IfExp, ast.Tuple)  # fmt: skip


def check_guard(source: str) -> None:
    """Accept a guard's Python source only if it is arithmetic over `L[<str>].size()[<int>]` (see the module
    docstring). Raises GuardRejected naming the offending part."""
    if not isinstance(source, str) or len(source) > 20_000:
        raise GuardRejected("not a string of at most 20000 characters")
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as e:
        raise GuardRejected(f"not Python ({e.msg})") from None
    for node in ast.walk(tree):
        if not isinstance(node, _NODES):
            raise GuardRejected(f"{type(node).__name__} is not allowed")
        if isinstance(node, ast.Name) and node.id not in _SAFE_BUILTINS | {"L", "math", "torch"}:
            raise GuardRejected(f"the name {node.id!r} is not allowed")
        if isinstance(node, ast.Constant):
            c = node.value
            if not (isinstance(c, (bool, int, float, str)) or c is None) or (isinstance(c, int) and abs(c) >= 1 << 63):
                raise GuardRejected(f"the constant {str(c)[:20]!r} is not allowed")
            if isinstance(c, str) and len(c) > 64:
                raise GuardRejected("a long string constant")
        if isinstance(node, ast.Attribute):
            base = node.value
            ok = (isinstance(base, ast.Name) and base.id == "math" and hasattr(math, node.attr)
                  and not node.attr.startswith("_")) or (isinstance(base, ast.Name) and base.id == "torch"
                  and node.attr in _TORCH_FUNCTIONS) or (node.attr == "size" and _is_input(base))  # fmt: skip
            if not ok:
                raise GuardRejected(f"the attribute .{node.attr} is not allowed")
        if isinstance(node, ast.Subscript):
            idx = node.slice
            if not isinstance(idx, ast.Constant) or not isinstance(idx.value, (int, str)):
                raise GuardRejected("only constant subscripts are allowed")
            if isinstance(idx.value, str) and not (isinstance(node.value, ast.Name) and node.value.id == "L"):
                raise GuardRejected("string subscripts only of L")
        if isinstance(node, ast.Call):
            if node.keywords or not (isinstance(node.func, (ast.Name, ast.Attribute))):
                raise GuardRejected("only plain calls of allowed functions")
            if isinstance(node.func, ast.Name) and node.func.id not in _SAFE_BUILTINS:
                raise GuardRejected(f"a call of {node.func.id!r}")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            e = node.right
            if not (isinstance(e, ast.Constant) and isinstance(e.value, int) and 0 <= e.value <= 64):
                raise GuardRejected("a power with a large or non-constant exponent")


def _is_input(node: ast.AST) -> bool:
    """`L['x']` (the model input in guard source)."""
    return isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "L"
