"""A roofline model of U-Net inference: FLOPs and the *minimum* bytes each step must move, for the unfused
eager graph and for the fused plan, and the floor time those imply on a described device.

Unfused: the model is traced to ATen ops (make_fx on the meta device: shapes only, no memory, no compute)
and every op is its own pass: it reads each input (activations and parameters) once and writes its output
once, the least any implementation of that op alone can do. Views (crop slices) are free; the consumer
reads the window. Max-pool indices are not counted (inference needs none).

Fused: the same trace, grouped the way the engine's plan fuses it (shared/DESIGN.md): a conv absorbs the
BatchNorm (folded into weight and bias), the activation and a softmax/sigmoid head in its epilogue, and a
following 2x2 max-pool as a second output; concat, crop, zero-pad and upsampling are read on the fly by the
consuming conv (the concatenated or upsampled tensor never exists: the consumer reads the sources, and
pays the interpolation FLOPs). A conv output consumed only by its fused pool is never written. Anything
else stays a separate step. This models the plan analytically from the traced graph; it does not read the
engine's Plan object (so it holds whatever the engine manages to fuse: it is the target, not a report).

Floor time of a step = max(FLOPs / peak, bytes / bandwidth), summed over steps (no overlap between steps).
Devices: this CPU with its sgemm rate and copy bandwidth *measured* at run time, and A100/H100 from their
spec sheets (labelled "model, spec sheet": nothing was measured on them here)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

# FLOPs per output element of the cheap ops (the minimum arithmetic, not what a given library executes).
BN_FLOPS = 2  # y = x * scale + shift, with scale/shift precomputed from (gamma, beta, mean, var)
ACT_FLOPS = 1  # relu / leaky relu / clamp
POOL2X2_FLOPS = 3  # 3 comparisons for the max of 4
BILINEAR_FLOPS = 7  # 4 multiplies + 3 adds per output element
SOFTMAX_FLOPS = 5  # per element: subtract max, exp, add to the sum, divide (+ the max compare)
SIGMOID_FLOPS = 4
ADD_FLOPS = 1

_VIEW_OPS = {"slice", "view", "_unsafe_view", "alias", "reshape", "expand", "t", "permute", "detach", "unsqueeze",
             "squeeze", "clone_view"}  # fmt: skip
_FREE_OPS = {"empty", "zeros", "getitem", "lift_fresh_copy", "_to_copy", "copy"}


@dataclass
class StepCost:
    name: str
    kind: str
    flops: float
    bytes_read: float
    bytes_written: float
    fused: list[str] = field(default_factory=list)
    conv: dict = field(default_factory=dict, repr=False)  # fused conv steps: has_bias, out_numel, cout

    @property
    def bytes(self) -> float:
        return self.bytes_read + self.bytes_written


@dataclass(frozen=True)
class Device:
    name: str
    peak_flops: float  # FLOP/s at the benchmark dtype
    bandwidth: float  # bytes/s of main memory
    source: str  # "measured" | "model, spec sheet"
    detail: str = ""


# Spec-sheet figures (dense, no sparsity). fp16/bf16 use the tensor cores; fp32 runs as TF32 on tensor
# cores only where a library enables it, so fp32 here is the plain CUDA-core rate.
SPEC_DEVICES: dict[str, dict] = {
    "A100-SXM4-80GB": {
        "flops": {"float16": 312e12, "bfloat16": 312e12, "float32": 19.5e12},
        "bandwidth": 2.0e12,
    },
    "H100-SXM5": {"flops": {"float16": 989e12, "bfloat16": 989e12, "float32": 67e12}, "bandwidth": 3.35e12},
}


def spec_device(name: str, dtype: torch.dtype) -> Device:
    d = SPEC_DEVICES[name]
    key = str(dtype).removeprefix("torch.")
    return Device(name, d["flops"][key], d["bandwidth"], "model, spec sheet",
                  f"{key} dense {d['flops'][key] / 1e12:g} TFLOP/s, HBM {d['bandwidth'] / 1e12:g} TB/s")  # fmt: skip


def measure_cpu(threads: int | None = None, n: int = 4096, copy_mib: int = 256, repeats: int = 2) -> Device:
    """This CPU: best-of-`repeats` fp32 sgemm rate (torch.mm of n x n) and copy bandwidth (a copy of
    `copy_mib` MiB counts its bytes read + written). Measured now, so it reflects the current load."""
    if threads is not None:
        torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(_seconds(lambda: torch.mm(a, b)) for _ in range(repeats))
    flops = 2.0 * n**3 / best
    src = torch.randn(copy_mib * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best_copy = min(_seconds(lambda: dst.copy_(src)) for _ in range(repeats))
    bandwidth = 2.0 * src.numel() * 4 / best_copy
    return Device("this CPU", flops, bandwidth, "measured",
                  f"sgemm {n}^3 fp32 {flops / 1e9:.0f} GFLOP/s, copy {bandwidth / 1e9:.1f} GB/s, "
                  f"{torch.get_num_threads()} threads")  # fmt: skip


def _seconds(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# --- the trace ------------------------------------------------------------------------------------


@dataclass
class _Op:
    name: str
    kind: str  # aten op name without overload, e.g. "convolution"
    inputs: list[str]  # activation value names
    params: list[int]  # numel of each parameter tensor read
    out: str
    out_numel: int
    in_numels: list[int]
    attrs: dict


def trace_ops(model: nn.Module, x: torch.Tensor) -> tuple[list[_Op], str, dict[str, tuple[int, ...]]]:
    """ATen ops of one forward pass (meta device: shapes only). Returns (ops, output value, shapes)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    m = copy.deepcopy(model).to("meta").eval()
    xm = torch.empty(x.shape, device="meta", dtype=torch.float32)
    with torch.no_grad():
        g = make_fx(m, tracing_mode="real")(xm)
    shapes: dict[str, tuple[int, ...]] = {}
    alias: dict[str, str] = {}
    params: set[str] = set()
    ops: list[_Op] = []
    out_name = ""

    def val(a: object) -> str | None:
        return alias.get(a.name, a.name) if isinstance(a, torch.fx.Node) else None

    for node in g.graph.nodes:
        meta = node.meta.get("val")
        if node.op == "placeholder":
            shapes[node.name] = tuple(meta.shape)
        elif node.op == "get_attr":
            params.add(node.name)
            shapes[node.name] = tuple(getattr(g, node.target).shape)
        elif node.op == "output":
            out_name = val(node.args[0][0] if isinstance(node.args[0], (list, tuple)) else node.args[0])
        elif node.op == "call_function":
            kind = getattr(node.target, "_opname", None) or getattr(node.target, "__name__", str(node.target))
            if kind == "getitem":
                src = val(node.args[0])
                if node.args[1] == 0 and src is not None:
                    alias[node.name] = src  # first output of a multi-output op (BN, pool with indices)
                continue
            if isinstance(meta, (tuple, list)):
                meta = meta[0]
            if not isinstance(meta, torch.Tensor):
                continue
            shapes[node.name] = tuple(meta.shape)
            if kind in _FREE_OPS:
                continue
            flat = [a for a in node.args if isinstance(a, torch.fx.Node)]
            for a in node.args:
                if isinstance(a, (list, tuple)):
                    flat += [b for b in a if isinstance(b, torch.fx.Node)]
            acts = [val(a) for a in flat if val(a) not in params and val(a) in shapes]
            prm = [_numel(shapes[val(a)]) for a in flat if val(a) in params]
            ops.append(_Op(node.name, kind, acts, prm, node.name, _numel(meta.shape),
                           [_numel(shapes[a]) for a in acts], _attrs(kind, node, shapes)))  # fmt: skip
    return ops, out_name, shapes


def _numel(shape: tuple[int, ...] | torch.Size) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _attrs(kind: str, node: torch.fx.Node, shapes: dict) -> dict:
    if kind == "convolution":
        w = shapes[node.args[1].name]
        return {"weight": w, "transposed": bool(node.args[6]), "groups": int(node.args[8]),
                "bias": node.args[2] is not None}  # fmt: skip
    if kind == "_softmax":
        return {"dim": int(node.args[1])}
    return {}


def _conv_flops(op: _Op, shapes: dict) -> float:
    """2 x MACs (+ one add per output for the bias). Transposed: every input pixel meets every tap."""
    w = op.attrs["weight"]  # grouped convs: the weight already holds Cin/groups (Cout/groups transposed)
    if op.attrs["transposed"]:  # weight [Cin, Cout/groups, kh, kw]
        macs = op.in_numels[0] * w[1] * w[2] * w[3]
    else:  # weight [Cout, Cin/groups, kh, kw]
        macs = op.out_numel * w[1] * w[2] * w[3]
    return 2.0 * macs + (op.out_numel if op.attrs["bias"] else 0)


def _op_flops(op: _Op, shapes: dict) -> float:
    k = op.kind
    if k == "convolution":
        return _conv_flops(op, shapes)
    if k in ("native_batch_norm", "_native_batch_norm_legit_no_training"):
        return BN_FLOPS * op.out_numel
    if k in ("relu", "relu_", "leaky_relu", "leaky_relu_", "hardtanh", "hardtanh_", "clamp", "clamp_min"):
        return ACT_FLOPS * op.out_numel
    if k.startswith("max_pool2d"):
        return POOL2X2_FLOPS * op.out_numel
    if k.startswith("upsample_bilinear2d"):
        return BILINEAR_FLOPS * op.out_numel
    if k in ("_softmax", "softmax"):
        return SOFTMAX_FLOPS * op.out_numel
    if k in ("sigmoid", "sigmoid_"):
        return SIGMOID_FLOPS * op.out_numel
    if k in ("add", "add_"):
        return ADD_FLOPS * op.out_numel
    return 0.0  # data movement only (cat, pad, nearest upsample, copies)


def _label(op: _Op, shapes: dict) -> str:
    s = shapes[op.out]
    where = f"{s[-2]}x{s[-1]}" if len(s) == 4 else ""
    if op.kind == "convolution":
        w = op.attrs["weight"]
        cin, cout = (w[0], w[1]) if op.attrs["transposed"] else (w[1], w[0])
        t = "convT" if op.attrs["transposed"] else "conv"
        return f"{t} {w[2]}x{w[3]} {cin}->{cout} @{where}"
    return f"{op.kind} @{where} C={s[1] if len(s) == 4 else '-'}"


# --- unfused and fused step costs -----------------------------------------------------------------


def unfused_steps(ops: list[_Op], shapes: dict, elem: int) -> list[StepCost]:
    """Each op is a pass: reads its inputs and parameters, writes its output. Views cost nothing."""
    steps = []
    for op in ops:
        if op.kind in _VIEW_OPS:
            continue
        steps.append(StepCost(_label(op, shapes), op.kind, _op_flops(op, shapes),
                              elem * (sum(op.in_numels) + sum(op.params)), elem * op.out_numel))  # fmt: skip
    return steps


_EPILOGUE = {"native_batch_norm", "_native_batch_norm_legit_no_training", "relu", "relu_", "leaky_relu",
             "leaky_relu_", "hardtanh", "hardtanh_", "clamp", "clamp_min", "_softmax", "softmax", "sigmoid",
             "sigmoid_"}  # fmt: skip
_READ_FUSED = {"cat", "constant_pad_nd", "upsample_bilinear2d", "upsample_nearest2d", *_VIEW_OPS}


def fused_steps(ops: list[_Op], out_value: str, shapes: dict, elem: int) -> list[StepCost]:
    """Group the trace the way the fused plan runs it (module docstring)."""
    consumers: dict[str, list[_Op]] = {}
    for op in ops:
        for i in op.inputs:
            consumers.setdefault(i, []).append(op)
    by_out = {op.out: op for op in ops}

    def read_fusable(v: str) -> bool:
        """v is produced by a concat/crop/pad/upsample whose every consumer is a conv or read-fusable."""
        op = by_out.get(v)
        if op is None or op.kind not in _READ_FUSED or v == out_value:
            return False
        return all(c.kind == "convolution" or (c.kind in _READ_FUSED and read_fusable(c.out))
                   for c in consumers.get(v, []))  # fmt: skip

    def read(v: str) -> tuple[float, float]:
        """(elements read, interpolation FLOPs) to read value v inside a consumer."""
        op = by_out.get(v)
        if not read_fusable(v):
            return float(_numel(shapes[v])), 0.0
        if op.kind == "cat" or op.kind == "constant_pad_nd":
            parts = [read(i) for i in op.inputs]
            return sum(p[0] for p in parts), sum(p[1] for p in parts)
        if op.kind.startswith("upsample"):
            src, fl = read(op.inputs[0])
            return src, fl + _op_flops(op, shapes)
        return float(op.out_numel), 0.0  # a crop: the window only

    steps: list[StepCost] = []
    owner: dict[str, StepCost] = {}  # value -> the fused conv step whose epilogue currently ends in it
    written: dict[int, list[str]] = {}
    for op in ops:
        src = op.inputs[0] if op.inputs else None
        host = owner.get(src) if src else None
        if op.kind == "convolution":
            elems, interp = 0.0, 0.0
            for v in op.inputs:
                e, f = read(v)
                elems, interp = elems + e, interp + f
            w = op.attrs["weight"]
            cout = w[1] * op.attrs["groups"] if op.attrs["transposed"] else w[0]
            bias = cout if op.attrs["bias"] else 0
            step = StepCost(_label(op, shapes), "conv", _conv_flops(op, shapes) + interp,
                            elem * (elems + _numel(w) + bias), 0.0)  # fmt: skip
            step.conv = {"has_bias": bool(bias), "out_numel": op.out_numel, "cout": cout}
            steps.append(step)
            owner[op.out] = step
            written[id(step)] = [op.out]
        elif op.kind in _EPILOGUE and host is not None and len(consumers.get(src, [])) == 1:
            bn = op.kind in ("native_batch_norm", "_native_batch_norm_legit_no_training")
            if bn and not host.conv["has_bias"]:
                # folded into the weights and a bias the conv did not have: one add per output, Cout reads
                host.flops += host.conv["out_numel"]
                host.bytes_read += elem * host.conv["cout"]
                host.conv["has_bias"] = True
            elif not bn:
                host.flops += _op_flops(op, shapes)
            host.fused.append("bn" if bn else op.kind.rstrip("_").lstrip("_"))
            owner[op.out] = host
            written[id(host)] = [op.out if v == src else v for v in written[id(host)]]
        elif op.kind.startswith("max_pool2d") and host is not None:
            host.flops += _op_flops(op, shapes)
            host.fused.append("pool")
            written[id(host)].append(op.out)
            if all(c.kind.startswith("max_pool2d") for c in consumers.get(src, [])) and src != out_value:
                written[id(host)].remove(src)  # nobody else reads the pre-pool output: never written
        elif op.kind in _READ_FUSED and read_fusable(op.out):
            continue  # read on the fly by the consuming conv
        elif op.kind in _VIEW_OPS:
            continue
        else:
            steps.append(StepCost(_label(op, shapes), op.kind, _op_flops(op, shapes),
                                  elem * (sum(op.in_numels) + sum(op.params)), elem * op.out_numel))  # fmt: skip
    for step in steps:
        if id(step) in written:
            step.bytes_written = elem * sum(_numel(shapes[v]) for v in written[id(step)])
            if step.fused:
                step.name += " +" + "+".join(step.fused)
    return steps


# --- the engine's Plan ----------------------------------------------------------------------------


def _slice_read(sl, buffers: dict) -> tuple[float, float]:
    """(elements per image a step reads through this Slice, interpolation FLOPs per image)."""
    h, w = buffers[sl.buffer].size
    if sl.resample is not None:  # read the low-resolution source once; pay the interpolation per output
        rh, rw = sl.size or sl.resample.size
        flops = BILINEAR_FLOPS * sl.channels * rh * rw if sl.resample.mode == "bilinear" else 0.0
        return float(sl.channels * h * w), float(flops)
    if sl.size is not None:  # a crop window (or a zero-padded one: only the real part is read)
        wh = min(sl.size[0], h) * min(sl.size[1], w)
        return float(sl.channels * wh), 0.0
    return float(sl.channels * h * w), 0.0


def _slice_elems(sl, buffers: dict) -> float:
    h, w = buffers[sl.buffer].size
    return float(sl.channels * h * w)


def plan_steps(plan, batch: int, elem: int) -> list[StepCost]:
    """Costs of the engine's Plan (unet_fast.graph.ir) as it stands: what each step reads and writes.
    Unlike the analytic model, a Conv always writes its `out` (the Plan has no dead-output elimination)."""
    from unet_fast.graph import ir

    b, steps = plan.buffers, []
    for st in plan.steps:
        reads = [_slice_read(sl, b) for sl in st.reads()]
        read_el, interp = sum(r[0] for r in reads), sum(r[1] for r in reads)
        write_el = sum(_slice_elems(sl, b) for sl in st.writes())
        flops, params, kind = interp, 0.0, st.kind.lower()
        if isinstance(st, ir.Conv):
            cout, cin, kh, kw = st.weight.shape
            oh, ow = b[st.out.buffer].size
            outs = cout * oh * ow
            flops += 2.0 * outs * cin * kh * kw + (outs if st.bias is not None else 0)
            flops += (ACT_FLOPS * outs if st.act != "none" else 0) + (ADD_FLOPS * outs if st.residual else 0)
            if st.pool_out is not None:
                flops += POOL2X2_FLOPS * _slice_elems(st.pool_out, b)
            params = st.weight.numel() + (st.bias.numel() if st.bias is not None else 0)
            kind = "conv"
        elif isinstance(st, ir.ConvTranspose2x2):
            cin, cout = st.weight.shape[0], st.weight.shape[1]
            h, w = b[st.input.buffer].size
            flops += 2.0 * h * w * cin * cout * 4 + (cout * 4 * h * w if st.bias is not None else 0)
            params = st.weight.numel() + (st.bias.numel() if st.bias is not None else 0)
        elif isinstance(st, ir.Head):
            k, c = st.weight.shape[0], st.weight.shape[1]
            h, w = b[st.out.buffer].size
            flops += 2.0 * h * w * k * c + (h * w * k if st.bias is not None else 0)
            flops += (
                {"softmax": SOFTMAX_FLOPS, "sigmoid": SIGMOID_FLOPS, "argmax": ACT_FLOPS}.get(st.op, 0)
                * h
                * w
                * k
            )
            params = st.weight.numel() + (st.bias.numel() if st.bias is not None else 0)
        elif isinstance(st, ir.Pool):
            flops += POOL2X2_FLOPS * write_el
        where = "x".join(map(str, b[st.writes()[0].buffer].size)) if st.writes() else "?"
        geometry = (
            f" {st.weight.shape[2]}x{st.weight.shape[3]} {st.weight.shape[1]}->{st.weight.shape[0]}"
            if isinstance(st, ir.Conv)
            else ""
        )
        name = (
            f"{st.kind}{geometry} @{where} [{st.name}" + (f" +{'+'.join(st.fused)}" if st.fused else "") + "]"
        )
        steps.append(
            StepCost(name, kind, batch * flops, elem * (batch * read_el + params), elem * batch * write_el)
        )
    return steps


def engine_plan(model: nn.Module, x: torch.Tensor):
    """The engine's Plan for this model and input shape (capture -> passes -> lower), as optimize builds it."""
    from unet_fast.graph.capture import capture
    from unet_fast.graph.lower import lower
    from unet_fast.graph.passes import run_passes

    g = capture(copy.deepcopy(model).eval(), torch.randn(x.shape))
    run_passes(g)
    return lower(g)


# --- floors and the report ------------------------------------------------------------------------


def floor_seconds(steps: list[StepCost], device: Device) -> tuple[float, float, float]:
    """(floor, of which compute-bound steps, of which memory-bound steps), in seconds."""
    total = compute = memory = 0.0
    for s in steps:
        tc, tm = s.flops / device.peak_flops, s.bytes / device.bandwidth
        total += max(tc, tm)
        if tc >= tm:
            compute += tc
        else:
            memory += tm
    return total, compute, memory


@dataclass
class Roofline:
    title: str
    dtype: torch.dtype
    unfused: list[StepCost]
    fused: list[StepCost]  # the engine's Plan where it could be built, else the analytic fusion
    devices: list[Device]
    fused_source: str = "analytic (the engine's Plan was not used)"
    target: list[StepCost] = field(default_factory=list)  # the analytic fusion, always

    def totals(self, steps: list[StepCost]) -> tuple[float, float]:
        return sum(s.flops for s in steps), sum(s.bytes for s in steps)

    def summary(self) -> dict:
        fu, bu = self.totals(self.unfused)
        ff, bf = self.totals(self.fused)
        out = {"title": self.title, "dtype": str(self.dtype).removeprefix("torch."), "unfused_steps": len(self.unfused),
               "fused_steps": len(self.fused), "unfused_flops": fu, "fused_flops": ff, "unfused_bytes": bu,
               "fused_bytes": bf, "bytes_saved": bu - bf, "fused_source": self.fused_source,
               "target_steps": len(self.target), "target_flops": self.totals(self.target)[0],
               "target_bytes": self.totals(self.target)[1], "devices": []}  # fmt: skip
        for d in self.devices:
            tu, tf = floor_seconds(self.unfused, d), floor_seconds(self.fused, d)
            out["devices"].append({"name": d.name, "source": d.source, "detail": d.detail,
                                   "peak_flops": d.peak_flops, "bandwidth": d.bandwidth,
                                   "unfused_floor_ms": tu[0] * 1e3, "fused_floor_ms": tf[0] * 1e3,
                                   "fused_compute_bound_ms": tf[1] * 1e3, "fused_memory_bound_ms": tf[2] * 1e3})  # fmt: skip
        return out

    def markdown(self, top: int = 5) -> str:
        s = self.summary()
        lines = [f"### Roofline model: {self.title} ({s['dtype']})", "",
                 f"- unfused eager graph: {s['unfused_steps']} passes, {s['unfused_flops'] / 1e9:.2f} GFLOP, "
                 f"{s['unfused_bytes'] / 2**20:.1f} MiB moved at minimum",
                 f"- fused plan ({s['fused_source']}): {s['fused_steps']} steps, {s['fused_flops'] / 1e9:.2f} GFLOP, "
                 f"{s['fused_bytes'] / 2**20:.1f} MiB; the fusions save {s['bytes_saved'] / 2**20:.1f} MiB "
                 f"({s['bytes_saved'] / max(s['unfused_bytes'], 1):.0%} of the traffic)",
                 f"- analytic target (every fusion of the design, dead outputs unwritten): {s['target_steps']} "
                 f"steps, {s['target_bytes'] / 2**20:.1f} MiB", "",
                 "| device | source | peak | bandwidth | unfused floor ms | fused floor ms | fused: compute-bound ms "
                 "| memory-bound ms |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for d in s["devices"]:
            lines.append(f"| {d['name']} | {d['source']} | {d['peak_flops'] / 1e12:.3g} TFLOP/s | "
                         f"{d['bandwidth'] / 1e9:.4g} GB/s | {d['unfused_floor_ms']:.3g} | {d['fused_floor_ms']:.3g} | "
                         f"{d['fused_compute_bound_ms']:.3g} | {d['fused_memory_bound_ms']:.3g} |")  # fmt: skip
        lines += ["", *[f"- {d['name']} ({d['source']}): {d['detail']}" for d in s["devices"] if d["detail"]]]
        if self.devices:
            d = self.devices[0]
            ranked = sorted(self.fused, key=lambda st: -max(st.flops / d.peak_flops, st.bytes / d.bandwidth))
            lines += ["", f"Where the fused plan's time must go on {d.name} (top {top} steps by floor):", ""]
            for st in ranked[:top]:
                tc, tm = st.flops / d.peak_flops, st.bytes / d.bandwidth
                lines.append(f"- {st.name}: {max(tc, tm) * 1e3:.3g} ms, {'compute' if tc >= tm else 'memory'}-bound "
                             f"({st.flops / 1e9:.2f} GFLOP, {st.bytes / 2**20:.1f} MiB)")  # fmt: skip
        return "\n".join(lines)


def roofline(model: nn.Module, x: torch.Tensor, dtype: torch.dtype = torch.float32, devices: list[Device] | None = None,
             title: str = "model", use_plan: bool = True) -> Roofline:  # fmt: skip
    """`use_plan`: cost the engine's Plan where it can be built (else, and always as `target`, the analytic
    fusion of the traced graph)."""
    elem = torch.empty((), dtype=dtype).element_size()
    ops, out, shapes = trace_ops(model, x)
    target = fused_steps(ops, out, shapes, elem)
    fused, source = target, "analytic: the engine's Plan was not requested"
    if use_plan:
        try:
            fused, source = plan_steps(engine_plan(model, x), x.shape[0], elem), "the engine's Plan"
        except Exception as e:  # no engine in this checkout, or it cannot capture this model
            source = f"analytic: the engine's Plan is unavailable ({type(e).__name__}: {str(e)[:120]})"
    return Roofline(title, dtype, unfused_steps(ops, shapes, elem), fused, devices if devices is not None else [],
                    source, target)  # fmt: skip


_MEASURED: dict[int, Device] = {}


def default_devices(dtype: torch.dtype, device: str = "cpu") -> list[Device]:
    """The measured CPU (for CPU runs; measured once per process and thread count) plus the spec-sheet
    GPUs. The CPU's rate is its fp32 sgemm rate whatever the dtype (this CPU has no faster fp16/bf16 path)."""
    gpus = [spec_device(n, dtype) for n in SPEC_DEVICES]
    if device == "cuda":
        return gpus
    threads = torch.get_num_threads()
    if threads not in _MEASURED:
        _MEASURED[threads] = measure_cpu()
    return [_MEASURED[threads], *gpus]


def roofline_for_workload(name: str, batch: int | None = None, size: tuple[int, int] | None = None,
                          dtype: torch.dtype = torch.float32, device: str = "cpu") -> Roofline:  # fmt: skip
    from unet_fast.bench.workloads import get_workload

    w = get_workload(name)
    x = w.make_input(batch, 0, size)
    return roofline(
        w.build(), x, dtype, default_devices(dtype, device), f"{name} {'x'.join(map(str, x.shape))}"
    )
