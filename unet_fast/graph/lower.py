"""Lowering: OpGraph (after passes) -> Plan. Decides where every value lives (its own buffer, a slot of a
concat buffer, or nowhere: read on the fly) and emits one Step per materialised value.

Reads on the fly ("fuse_upsample"): a resample, crop or zero pad feeding a conv or the head becomes part of
the consumer's Slice (spec.InputView: resample, then window); a concat feeding convs becomes a list of
Slices (virtual concat). Where a consumer needs a plain tensor, the view is materialised by a Concat /
Resample step, once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from unet_fast.graph.ir import Buffer, Concat, Conv, ConvTranspose2x2, Fallback, Head, Plan, Pool, Slice, Step
from unet_fast.graph.opgraph import Node, OpGraph, evaluate_node
from unet_fast.graph.passes.fuse_pool import is_pool2x2
from unet_fast.graph.types import Resample


@dataclass
class NodeFn:
    """A graph op run by PyTorch (NCHW) as a Fallback step; picklable."""

    node: Node

    def __call__(self, *args: Any) -> Any:
        return evaluate_node(self.node, list(args))


class _Lowering:
    def __init__(self, g: OpGraph, fuse_reads: bool, virtual_concat: bool) -> None:
        self.g = g
        self.fuse_reads = fuse_reads
        self.virtual_concat = virtual_concat
        self.buffers: dict[str, Buffer] = {}
        self.slices: dict[int, Slice] = {}  # materialised value -> where it lives
        self.raw: dict[int, str] = {}  # non-activation values -> env name
        self.steps: list[Step] = []
        self.users: dict[int, list[Node]] = {id(n): [] for n in g.nodes}  # one pass, not one scan per node
        for n in g.nodes:
            for i in dict.fromkeys(map(id, n.inputs)):
                self.users.setdefault(i, []).append(n)
        self.materialised: dict[int, Slice] = {}  # views materialised by a Concat step

    def new_buffer(self, name: str, channels: int, size: tuple[int, int], index: bool = False) -> Slice:
        base, k = name, 1
        while name in self.buffers:
            name, k = f"{base}_{k}", k + 1
        self.buffers[name] = Buffer(name, channels, size, index)
        return Slice(name, 0, channels)

    # -- where values live ---------------------------------------------------------------------------
    def place(self) -> None:
        g = self.g
        for n in g.nodes:
            if n.op == "cat" and n.attrs.get("slots"):
                whole = self.new_buffer(n.name, n.shape[1], n.shape[2:])
                self.slices[id(n)] = whole
                off = 0
                for x in n.inputs:
                    self.slices[id(x)] = Slice(whole.buffer, off, x.shape[1])
                    off += x.shape[1]
        for n in g.nodes:
            if id(n) in self.slices or self.is_virtual(n):
                continue
            if n.op == "argmax" or (n.op == "head" and n.attrs["op"] == "argmax"):
                self.slices[id(n)] = self.new_buffer(n.name, 1, tuple(n.inputs[0].shape[2:]), index=True)
            elif n.shape is not None:
                self.slices[id(n)] = self.new_buffer(n.name, n.shape[1], n.shape[2:])
            else:
                self.raw[id(n)] = n.name

    def is_virtual(self, n: Node) -> bool:
        """Values never written anywhere: read through a view by every consumer."""
        if n.op == "cat":
            return not n.attrs.get("slots")
        return n.op in ("resample", "window") and self.fuse_reads

    # -- reading values ------------------------------------------------------------------------------
    def views(self, n: Node) -> list[Slice] | None:
        """The Slices that read `n` without materialising it, or None if no view can express it."""
        if id(n) in self.slices:
            return [self.slices[id(n)]]
        if id(n) in self.materialised:
            return [self.materialised[id(n)]]
        if n.op == "cat":
            if not self.virtual_concat:
                return None
            out: list[Slice] = []
            for x in n.inputs:
                v = self.views(x)
                if v is None:
                    return None
                out.extend(v)
            return out
        if n.op in ("resample", "window") and self.fuse_reads:
            src = self.views(n.inputs[0])
            if src is None or len(src) != 1:
                return None
            s = src[0]
            if n.op == "resample":
                if not s.plain:
                    return None
                a = n.attrs
                return [replace(s, resample=Resample(a["mode"], tuple(a["size"]), a["align_corners"]))]
            (top, left), (h, w) = n.attrs["offset"], n.attrs["size"]
            if s.size is None:
                return [replace(s, offset=(top, left), size=(h, w))]
            # window of a window: only when the outer one stays inside the inner one (else zeros differ)
            ih, iw = s.size
            if top >= 0 and left >= 0 and top + h <= ih and left + w <= iw:
                return [replace(s, offset=(s.offset[0] + top, s.offset[1] + left), size=(h, w))]
            return None
        return None

    def read(self, n: Node, *, multi: bool = False, plain: bool = False) -> list[Slice]:
        v = self.views(n)
        if v is not None and (multi or len(v) == 1) and (not plain or all(s.plain for s in v)):
            return v
        return [self.materialise(n)]

    def materialise(self, n: Node) -> Slice:
        if id(n) in self.materialised:
            return self.materialised[id(n)]
        if n.op in ("resample", "window"):
            src = self.read(n.inputs[0], plain=n.op == "resample")
            view = self.views_of_single(n, src[0])
            out = self.new_buffer(n.name, n.shape[1], n.shape[2:])
            step: Step = Concat(n.name, [view], out)
        elif n.op == "cat":
            parts = [s for x in n.inputs for s in self.read(x, multi=True)]
            out = self.new_buffer(n.name, n.shape[1], n.shape[2:])
            step = Concat(n.name, parts, out)
        else:
            raise AssertionError(f"cannot materialise {n}")
        self.steps.append(step)
        self.materialised[id(n)] = out
        return out

    def views_of_single(self, n: Node, s: Slice) -> Slice:
        if n.op == "resample":
            a = n.attrs
            return replace(s, resample=Resample(a["mode"], tuple(a["size"]), a["align_corners"]))
        if s.size is not None:  # materialise the inner window first
            inner = self.new_buffer(f"{n.name}_src", s.channels, s.size)
            self.steps.append(Concat(n.name, [s], inner))
            s = inner
        return replace(s, offset=tuple(n.attrs["offset"]), size=tuple(n.attrs["size"]))

    def plain(self, n: Node) -> Slice | str:
        if id(n) in self.raw:
            return self.raw[id(n)]
        return self.read(n, plain=True)[0]

    # -- steps ---------------------------------------------------------------------------------------
    def emit(self) -> None:
        for n in self.g.nodes:
            if n.op == "input" or self.is_virtual(n) or n.op == "cat":
                continue
            if n.op == "max_pool" and n.attrs.get("epilogue"):
                continue  # written by its conv
            self.steps.append(self.step_for(n))

    def out(self, n: Node) -> Slice:
        return self.slices[id(n)]

    def step_for(self, n: Node) -> Step:
        a = n.attrs
        label = "+".join([n.name, *n.fused])
        if n.op == "conv" and a["groups"] == 1:
            pool = next(
                (u for u in self.users[id(n)] if u.op == "max_pool" and u.attrs.get("epilogue")), None
            )
            step: Step = Conv(label, self.read(n.inputs[0], multi=True), a["weight"], a["bias"], a["stride"],
                              a["padding"], a["dilation"], a["act"], a["negative_slope"], self.out(n),
                              pool_out=self.out(pool) if pool is not None else None,
                              residual=self.plain(n.inputs[1]) if a.get("residual") else None)  # fmt: skip
            if pool is not None:
                step.fused.append(f"maxpool2x2:{pool.name}")
            return step
        if n.op == "conv_transpose" and _is_transpose2x2(n):
            return ConvTranspose2x2(label, self.plain(n.inputs[0]), a["weight"], a["bias"], a["act"],
                                    a["negative_slope"], self.out(n))  # fmt: skip
        if n.op == "max_pool" and is_pool2x2(n):
            return Pool(label, self.plain(n.inputs[0]), self.out(n))
        if n.op in ("resample", "window"):
            src = self.read(n.inputs[0], plain=n.op == "resample")[0]
            return Concat(label, [self.views_of_single(n, src)], self.out(n))
        if n.op == "head":
            return Head(label, self.read(n.inputs[0])[0], a["weight"], a["bias"], a["op"], self.out(n))
        # everything else: PyTorch on NCHW tensors
        fn = a["fn"] if n.op == "fallback" else NodeFn(n)
        reason = a.get("reason") or _reason(n)
        outs = [self.slices[id(n)] if id(n) in self.slices else self.raw[id(n)]]
        return Fallback(label, fn, [self.plain(i) for i in n.inputs], outs, reason)


def _is_transpose2x2(n: Node) -> bool:
    a = n.attrs
    return (tuple(a["weight"].shape[2:]) == (2, 2) and a["stride"] == (2, 2) and a["padding"] == (0, 0)
            and a["output_padding"] == (0, 0) and a["dilation"] == (1, 1) and a["groups"] == 1)  # fmt: skip


def _reason(n: Node) -> str:
    a = n.attrs
    if n.op == "conv":
        return f"grouped convolution (groups={a['groups']})"
    if n.op == "conv_transpose":
        return "transposed conv other than 2x2 stride 2"
    if n.op == "max_pool":
        return f"max-pool {a['kernel'][0]}x{a['kernel'][1]} stride {a['stride']} padding {a['padding']} (only 2x2/2 is fused)"
    if n.op == "batch_norm":
        return "BatchNorm not directly after a single-use convolution"
    if n.op == "act":
        return f"{a['kind']} not directly after a single-use convolution"
    if n.op == "add":
        return "add not fusable into a conv epilogue"
    if n.op in ("softmax", "sigmoid", "argmax"):
        return f"{n.op} after a head that is not a 1x1 conv"
    return f"op {n.op}"


def lower(g: OpGraph, *, fuse_reads: bool = True, virtual_concat: bool = True) -> Plan:
    """`fuse_reads`: resample/crop/pad read on the fly; `virtual_concat`: convs read concats as views."""
    lw = _Lowering(g, fuse_reads, virtual_concat)
    lw.place()
    lw.emit()
    inp = lw.slices[id(g.input)]
    outputs: list[Slice | str] = []
    kinds: list[str] = []
    for out_node in g.outputs:
        if out_node is g.input:
            outputs.append(inp)
            kinds.append("input")
        elif id(out_node) in lw.raw:
            outputs.append(lw.raw[id(out_node)])
            kinds.append("raw")
        else:
            s = lw.plain(out_node)
            outputs.append(s)
            kinds.append("index" if lw.buffers[s.buffer].index else "activation")
    plan = Plan(lw.buffers, lw.steps, inp, outputs, kinds)
    _check_dtypes(plan)
    return plan


def _check_dtypes(plan: Plan) -> None:
    for s in plan.steps:
        for t in (getattr(s, "weight", None), getattr(s, "bias", None)):
            if isinstance(t, torch.Tensor) and t.dtype != torch.float32:
                raise AssertionError(f"{s.name}: weights must be fp32 in the plan, got {t.dtype}")
