"""Typed launchers over unet_fast._C (the C++ CPU ops) on fp32 tensors, and the cpu backend's fp32 kernels in
the kernel registry (kernels/registry.py).

All argument checking happens here (kernels/checks.py, plus this backend's own constraints: CPU tensors, fp32);
the C++ side re-checks only what could read or write out of bounds. Threads follow torch.get_num_threads().

Design (docs/architecture.md, "The CPU backend"):
- Every C++ op is compiled once per vector variant of the CPU variant table (kernels/cpu_isa.py: portable,
  portable16, avx2, avx512, ...). Weight-bearing ops choose theirs when the weight is packed (`isa=`, else
  UNET_FAST_KERNELS=cpu=<name>, else the best this CPU runs), because the packed layout is the variant's;
  the packed weight carries it. Ops without weights take `isa=` per call (None: the same rule).
- conv2d: the direct convolution gathers the views (virtual concat, resample-on-read, crop / pad window)
  with the C++ `gather_view` into one contiguous NHWC scratch (skipped when the input already is one), runs
  the convolution in PyTorch (oneDNN on a channels_last view of that NHWC memory, no bias), and one C++
  epilogue pass writes act(acc + bias + residual) into the output slot and the 2x2 max-pool into pool_out.
  3x3 stride-1 convs with >= 16 input channels run the Winograd F(4x4, 3x3) kernel instead
  (kernels/cpu_winograd.py). `conv2d` / `pack_conv_weight` are the kernel-level API of a direct call (a
  ConvWeight carries a Winograd weight where winograd_decision picks it and runs it where the call fits);
  the engine does not call them: it runs the registry's choice, made once per step.
- conv_transpose2x2: one C++ register-blocked GEMM [N*H*W, Cin] x [Cin, 4*Cout] whose tiles apply the
  epilogue (bias, activation) and store straight into the output pixels (2i + a, 2j + b) of the slot.
- upsample_concat, maxpool2x2, head: fully C++ (one pass each).
- bf16 engines (issue 17) run the bf16 tile kernels (kernels/cpu_bf16.py, cpu_bf16_ops.py) and the Winograd on
  bf16 activations (kernels/cpu_winograd.py), each registered by its module. On a CPU without bf16 hardware
  (no tile backend but the emulator, which the registry never picks for speed: issue 25) the bf16 convs,
  transposed convs and head run this module's fp32 kernels over bf16 storage (`*_on_bf16` below): the
  inputs read exactly as fp32, the weights rounded to bf16 like every bf16 kernel's, fp32 compute, one
  rounding of each output.

Order of this file: helpers, the fp32 launchers (activation, maxpool2x2, upsample_concat, conv2d,
conv_transpose2x2, head), the fp32 kernels over bf16 storage, the registry entries.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from unet_fast._ext import require_cpu
from unet_fast.graph.ir import Concat, Conv, ConvTranspose2x2, Head, Pool
from unet_fast.kernels import checks, cpu_isa, cpu_winograd, registry
from unet_fast.kernels.cpu_desc import nhwc_desc as _desc
from unet_fast.kernels.cpu_desc import num_threads, view_source
from unet_fast.kernels.spec import ACTIVATIONS, HEAD_OPS, InputView, as_view

# What the fp32 C++ ops below read and write (a bf16 tensor passed to them is an error, not a reinterpretation)
_FP32: tuple[torch.dtype, ...] = (torch.float32,)
# Class-map dtypes of head(op="argmax"), in the C++ IndexKind order.
_INDEX_KINDS = (torch.uint8, torch.int32, torch.int64)


# ---------------------------------------------------------------------------------------------------
# This backend's own checks and the tensor descriptors the C++ ops take
# ---------------------------------------------------------------------------------------------------


def _check_dtype(dtype: torch.dtype) -> None:
    if dtype not in _FP32:
        raise ValueError(f"the cpu backend supports dtypes {_FP32} in this kernel, got {dtype} (bf16 runs on the "
                         "bf16 kernels: kernels/cpu_bf16.py, cpu_bf16_ops.py, the bf16 Winograd; the engine "
                         "picks them from the kernel registry)")  # fmt: skip


def _check_cpu(named: dict[str, Tensor | None], *, float_only: bool = True) -> None:
    for name, t in named.items():
        if t is None:
            continue
        if t.device.type != "cpu":
            raise ValueError(f"{name} is on {t.device}; the cpu backend needs CPU tensors")
        if float_only and t.dtype not in _FP32:
            raise ValueError(f"{name} has dtype {t.dtype}; the cpu backend supports {_FP32} in this kernel "
                             "(bf16 tensors: the bf16 ops of kernels/cpu_bf16_ops.py)")  # fmt: skip


def _vector(t: Tensor | None, name: str, length: int) -> Tensor | None:
    """A contiguous fp32 CPU vector (bias) of `length`, or None."""
    if t is None:
        return None
    _check_cpu({name: t})
    if tuple(t.shape) != (length,):
        raise ValueError(f"{name} must have shape ({length},), got {tuple(t.shape)}")
    return t.contiguous()


_SCRATCH = threading.local()


def _scratch(role: str, shape: tuple[int, ...]) -> Tensor:
    """A reusable fp32 scratch of `shape` for `role` (one per thread, grown as needed, used only within
    one launcher call). A fresh multi-MB allocation is returned to the OS when freed and page-faulted in
    again on the next call, which costs about as much as the pass that fills it."""
    numel = math.prod(shape)
    buf = getattr(_SCRATCH, role, None)
    if buf is None or buf.numel() < numel:
        buf = torch.empty(numel, dtype=torch.float32)
        setattr(_SCRATCH, role, buf)
    return buf[:numel].view(shape)


def _isa(isa: str | None, op: str) -> int:
    """The C++ `isa` argument of an op without a packed weight: which variant of its body runs (None:
    UNET_FAST_KERNELS cpu=, else the best this CPU runs; kernels/cpu_isa.py)."""
    return cpu_isa.isa_index(isa, what=op)


def _ptr(t: Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def _is_plain(view: InputView) -> bool:
    """True when a view reads its tensor as is: no resample, no window."""
    t = view.tensor
    return view.resample is None and view.offset == (0, 0) and view.out_size == (t.shape[1], t.shape[2])


# ---------------------------------------------------------------------------------------------------
# Smoke-test op
# ---------------------------------------------------------------------------------------------------


def activation(x: Tensor, act: str = "relu", negative_slope: float = 0.01, out: Tensor | None = None, *,
               isa: str | None = None) -> Tensor:  # fmt: skip
    """Elementwise activation of a contiguous fp32 CPU tensor (the extension's smoke-test op); `isa` picks
    the kernel variant (tests run each)."""
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; expected one of {ACTIVATIONS}")
    if x.device.type != "cpu" or x.dtype != torch.float32 or not x.is_contiguous():
        raise ValueError(f"expected a contiguous float32 CPU tensor, got {x.dtype} on {x.device}"
                         f"{'' if x.is_contiguous() else ', non-contiguous'}")  # fmt: skip
    out = torch.empty_like(x) if out is None else out
    if out.shape != x.shape or out.dtype != x.dtype or not out.is_contiguous() or out.device != x.device:
        raise ValueError(f"out must be a contiguous float32 CPU tensor of shape {tuple(x.shape)}")
    require_cpu().activation_f32(x.data_ptr(), out.data_ptr(), x.numel(), ACTIVATIONS.index(act),
                                 float(negative_slope), num_threads(), _isa(isa, "activation"))  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------------
# maxpool2x2
# ---------------------------------------------------------------------------------------------------


def maxpool2x2(x: Tensor, out: Tensor | None = None, *, isa: str | None = None) -> Tensor:
    """2x2 stride-2 max-pool of NHWC fp32 `x` (floored) into `out` (allocated if None; a slot is fine). `isa`
    picks the kernel variant (kernels/cpu_isa.py; tests run each). bf16: cpu_bf16_ops.maxpool2x2."""
    out = checks.check_maxpool2x2(x, out)
    _check_cpu({"x": x, "out": out})
    checks.check_no_overlap(out, "out", {"x": x})
    require_cpu().maxpool2x2_f32(_desc(x), _desc(out), num_threads(), _isa(isa, "maxpool2x2"))
    return out


# ---------------------------------------------------------------------------------------------------
# upsample_concat (and the gather every conv / head input goes through)
# ---------------------------------------------------------------------------------------------------


def _gather(views: Sequence[InputView], out: Tensor, isa: str | None = None) -> Tensor:
    """Write the views side by side along out's channels (each through its resample and window)."""
    ext, threads, isa_arg = require_cpu(), num_threads(), _isa(isa, "upsample_concat")
    c0 = 0
    for v in views:
        c = v.channels
        src, *how = view_source(v)
        ext.gather_view_f32(src, _desc(out[..., c0 : c0 + c]), *how, threads, isa_arg)
        c0 += c
    return out


def upsample_concat(inputs: Sequence[Tensor | InputView], out: Tensor | None = None, *,
                    isa: str | None = None) -> Tensor:  # fmt: skip
    """Materialise the fp32 views side by side along channels into `out` (a channel slot is fine). `isa` picks
    the kernel variant (kernels/cpu_isa.py; tests run each). bf16: cpu_bf16_ops.upsample_concat."""
    views, out = checks.check_upsample_concat(inputs, out)
    _check_cpu({f"inputs[{i}]": v.tensor for i, v in enumerate(views)} | {"out": out})
    checks.check_no_overlap(out, "out", {f"inputs[{i}]": v.tensor for i, v in enumerate(views)})
    return _gather(views, out, isa)


def _dense_input(views: Sequence[InputView], isa: str | None) -> Tensor:
    """The views as one contiguous NHWC tensor: the input itself when it already is one, else a
    gathered scratch (virtual concat, resample, window, or a channel slice of a bigger buffer)."""
    if len(views) == 1 and _is_plain(views[0]) and views[0].tensor.is_contiguous():
        return views[0].tensor
    n = views[0].tensor.shape[0]
    h, w = views[0].out_size
    return _gather(views, _scratch("gather", (n, h, w, sum(v.channels for v in views))), isa)


# ---------------------------------------------------------------------------------------------------
# conv2d
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvWeight:
    """A conv weight packed for CPU kernel variant `isa` (the kernel-level API: cpu.conv2d): OIHW fp32 for direct
    convolution (oneDNN, then the variant's gather and epilogue), and, where cpu_winograd.winograd_decision
    chose it at pack time, the Winograd-transformed weight in the variant's layout (calls Winograd cannot take
    still run direct)."""

    oihw: Tensor
    isa: str
    winograd: cpu_winograd.WinogradWeight | None = None

    @property
    def algorithm(self) -> str:
        """Named per step in FusedUNet.report(): the algorithm and the variant ('' for direct convolution)."""
        w = self.winograd
        return f"Winograd F({w.tile}x{w.tile},3x3), {self.isa}" if w is not None else ""

    @property
    def shape(self) -> torch.Size:
        return self.oihw.shape


def pack_conv_weight(weight: Tensor, dtype: torch.dtype, *, exact: bool = False,
                     isa: str | None = None) -> ConvWeight:  # fmt: skip
    """OIHW -> ConvWeight for kernel variant `isa` (None: UNET_FAST_KERNELS cpu=, else the best this CPU runs):
    the contiguous, detached fp32 OIHW weight PyTorch's convolution takes, plus the Winograd transform where
    cpu_winograd.winograd_decision picks it (3x3 with enough input channels to profit, not `exact`).
    Raises ValueError for a dtype other than fp32 (bf16 weights: cpu_bf16.pack_conv_weight,
    cpu_winograd.pack_winograd_weight), a weight that is not 4-D, or an unknown / unrunnable isa."""
    _check_dtype(dtype)
    if weight.dim() != 4:
        raise ValueError(f"conv weight must be OIHW [Cout, Cin, kH, kW], got shape {tuple(weight.shape)}")
    variant = cpu_isa.choose(isa, what="conv2d")
    oihw = weight.detach().to(device="cpu", dtype=torch.float32).contiguous()
    if cpu_winograd.winograd_decision(oihw.shape, exact=exact):
        return ConvWeight(oihw, variant.name)
    return ConvWeight(oihw, variant.name, cpu_winograd.pack_winograd_weight(oihw, isa=variant.name))


def _check_packed(packed: Tensor, name: str, dim: int) -> None:
    if not isinstance(packed, Tensor) or packed.dim() != dim or packed.dtype != torch.float32:
        raise ValueError(f"{name} must be what this backend's pack function returns (a {dim}-D fp32 tensor)")
    _check_cpu({name: packed})


def conv2d(inputs: Sequence[Tensor | InputView], packed_weight: ConvWeight | Tensor, bias: Tensor | None = None, *,
           stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
           dilation: int | Sequence[int] = 1, act: str = "none", negative_slope: float = 0.01,
           residual: Tensor | None = None, out: Tensor | None = None,
           pool_out: Tensor | None = None) -> Tensor:  # fmt: skip
    """spec.conv2d on CPU, fp32, the kernel-level API: Winograd where the weight was packed for it and the call
    fits (stride 1, padding 0/1: cpu_winograd.winograd_decision); otherwise the direct convolution (gather if
    needed -> PyTorch conv into a scratch -> one fused C++ epilogue). Runs on the weight's kernel variant (a
    plain OIHW tensor: direct, default variant). ValueError when out or pool_out shares elements with an
    input, the residual (but out may be the residual itself) or each other."""
    checks.check_conv_outputs(inputs, residual, out, pool_out)
    isa = None
    if isinstance(packed_weight, ConvWeight):
        isa, wino = packed_weight.isa, packed_weight.winograd
        kw = dict(
            stride=stride, padding=padding, dilation=dilation, residual=residual, out=out, pool_out=pool_out
        )
        if wino is not None and not cpu_winograd.winograd_decision(wino, inputs=inputs, **kw):
            return cpu_winograd.conv3x3_winograd(inputs, wino, bias, act=act, negative_slope=negative_slope,
                                                 **kw)  # fmt: skip
        packed_weight = packed_weight.oihw
    return _conv2d_direct(inputs, packed_weight, bias, stride=stride, padding=padding, dilation=dilation, act=act,
                          negative_slope=negative_slope, residual=residual, out=out, pool_out=pool_out, isa=isa)  # fmt: skip


def _conv2d_direct(inputs: Sequence[Tensor | InputView], oihw: Tensor, bias: Tensor | None, *,
                   stride: int | Sequence[int], padding: int | Sequence[int], dilation: int | Sequence[int],
                   act: str, negative_slope: float, residual: Tensor | None, out: Tensor | None,
                   pool_out: Tensor | None, isa: str | None) -> Tensor:  # fmt: skip
    """The direct convolution: gather (if needed) -> PyTorch conv (oneDNN) -> one fused C++ epilogue, the gather
    on variant `isa`. The caller checked the overlaps (checks.check_conv_outputs)."""
    _check_packed(oihw, "packed_weight", 4)
    g = checks.check_conv2d(inputs, oihw, bias, stride=stride, padding=padding, dilation=dilation,
                            act=act, residual=residual, out=out, pool_out=pool_out,
                            weight_shape=tuple(oihw.shape))  # fmt: skip
    _check_cpu({f"inputs[{i}]": v.tensor for i, v in enumerate(g.views)}
               | {"residual": g.residual, "out": g.out, "pool_out": g.pool_out})  # fmt: skip
    bias = _vector(bias, "bias", g.out_channels)
    x = _dense_input(g.views, isa)
    # NHWC memory seen as a channels_last NCHW tensor: oneDNN's native layout, no copy; no bias here,
    # the epilogue adds it in the pass it makes anyway.
    acc = F.conv2d(x.permute(0, 3, 1, 2), oihw, None, g.stride, g.padding, g.dilation)
    acc = acc.permute(0, 2, 3, 1)
    if not acc.is_contiguous():  # e.g. one input channel, where PyTorch may pick NCHW for the result
        acc = acc.contiguous()
    require_cpu().conv_epilogue_f32(
        _desc(acc), _ptr(bias), None if g.residual is None else _desc(g.residual), _desc(g.out),
        None if g.pool_out is None else _desc(g.pool_out), g.act_index, float(negative_slope), num_threads(),
    )  # fmt: skip
    return g.out


# ---------------------------------------------------------------------------------------------------
# conv_transpose2x2
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvTransposeWeight:
    """An IOHW [Cin, Cout, 2, 2] weight packed for CPU kernel variant `isa`: panels[(2a + b) * ncb + j] is
    the [Cin, nr] block of output channels nr*j .. nr*j + nr - 1 of kernel tap (a, b), zero past Cout
    (nr = the variant's conv_transpose_nr, ncb = ceil(Cout / nr))."""

    panels: Tensor
    cin: int
    cout: int
    isa: str
    nr: int

    @property
    def shape(self) -> torch.Size:
        """The logical IOHW shape, as the argument checks expect it."""
        return torch.Size((self.cin, self.cout, 2, 2))


def pack_conv_transpose_weight(
    weight: Tensor, dtype: torch.dtype, *, isa: str | None = None
) -> ConvTransposeWeight:
    """IOHW [Cin, Cout, 2, 2] -> ConvTransposeWeight for kernel variant `isa` (None: UNET_FAST_KERNELS cpu=,
    else the best this CPU runs): nr-channel panels per kernel tap, contiguous fp32. Raises ValueError for a
    dtype other than fp32 (bf16: cpu_bf16.pack_conv_transpose_weight), a weight that is not IOHW 2x2, or an
    unknown / unrunnable isa."""
    _check_dtype(dtype)
    if weight.dim() != 4 or tuple(weight.shape[2:]) != (2, 2):
        raise ValueError(
            f"conv_transpose2x2 weight must be IOHW [Cin, Cout, 2, 2], got {tuple(weight.shape)}"
        )
    variant = cpu_isa.choose(isa, what="conv_transpose2x2")
    nr = variant.conv_transpose_nr
    w = weight.detach().to(device="cpu", dtype=torch.float32)
    cin, cout = w.shape[:2]
    ncb = -(-cout // nr)
    taps = F.pad(w.permute(2, 3, 0, 1), (0, ncb * nr - cout))  # [a, b, Cin, Cout padded]
    panels = taps.reshape(4, cin, ncb, nr).permute(0, 2, 1, 3).reshape(4 * ncb, cin, nr)
    return ConvTransposeWeight(panels.contiguous(), int(cin), int(cout), variant.name, nr)


def conv_transpose2x2(x: Tensor, packed: ConvTransposeWeight, bias: Tensor | None = None, *, act: str = "none",
                      negative_slope: float = 0.01, out: Tensor | None = None) -> Tensor:  # fmt: skip
    """spec.conv_transpose2x2 on CPU, fp32: one C++ pass, GEMM tiles stored with their epilogue into `out`, on
    the kernel variant the weight was packed for."""
    if not isinstance(packed, ConvTransposeWeight):
        raise ValueError("packed must be what this backend's pack_conv_transpose_weight returns")
    out = checks.check_conv_transpose2x2(x, packed.panels, bias, out, weight_shape=tuple(packed.shape))
    checks.check_no_overlap(out, "out", {"x": x})
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; expected one of {ACTIVATIONS}")
    _check_cpu({"x": x, "out": out})
    bias = _vector(bias, "bias", packed.cout)
    isa_arg = cpu_isa.isa_index(packed.isa, what="conv_transpose2x2")
    require_cpu().conv_transpose2x2_f32(_desc(x), packed.panels.data_ptr(), packed.panels.numel(), packed.cout,
                                        _ptr(bias), _desc(out), ACTIVATIONS.index(act), float(negative_slope),
                                        num_threads(), isa_arg)  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------------
# head
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeadWeight:
    """A head weight, contiguous fp32 [K, C], for CPU kernel variant `isa` (every variant reads this layout)."""

    weight: Tensor
    isa: str

    @property
    def shape(self) -> torch.Size:
        return self.weight.shape


def pack_head_weight(weight: Tensor, dtype: torch.dtype, *, isa: str | None = None) -> HeadWeight:
    """[K, C, 1, 1] or [K, C] -> HeadWeight for kernel variant `isa` (None: UNET_FAST_KERNELS cpu=, else the
    best this CPU runs). Raises ValueError for a dtype other than fp32 (bf16: cpu_bf16_ops.pack_head_weight), a
    bad shape or an unknown / unrunnable isa."""
    _check_dtype(dtype)
    if weight.dim() not in (2, 4) or (weight.dim() == 4 and tuple(weight.shape[2:]) != (1, 1)):
        raise ValueError(f"head weight must be [K, C] or [K, C, 1, 1], got {tuple(weight.shape)}")
    variant = cpu_isa.choose(isa, what="head")
    w = weight.detach().to(device="cpu", dtype=torch.float32).reshape(weight.shape[0], -1).contiguous()
    return HeadWeight(w, variant.name)


def head(x: Tensor | InputView, packed: HeadWeight, bias: Tensor | None = None, op: str = "softmax",
         out: Tensor | None = None) -> Tensor:  # fmt: skip
    """spec.head on CPU, fp32: per pixel K dot products + softmax / sigmoid / argmax / logits, one C++ pass, on
    the kernel variant the weight was packed for."""
    if not isinstance(packed, HeadWeight):
        raise ValueError("packed must be what this backend's pack_head_weight returns (a HeadWeight)")
    isa = packed.isa
    packed_w = packed.weight
    _check_packed(packed_w, "packed.weight", 2)
    view, out = checks.check_head(x, packed_w, bias, op, out)  # packed [K, C] is a valid logical shape
    checks.check_no_overlap(out, "out", {"x": view.tensor})
    _check_cpu({"x": view.tensor})
    _check_cpu({"out": out}, float_only=op != "argmax")
    bias = _vector(bias, "bias", packed_w.shape[0])
    isa_arg = cpu_isa.isa_index(isa, what="head")
    xs = view.tensor
    if not _is_plain(view):
        xs = _gather([view], _scratch("gather", (xs.shape[0], *view.out_size, view.channels)), isa)
    index_kind = _INDEX_KINDS.index(out.dtype) if op == "argmax" else 0
    w = packed_w.contiguous()  # held in a name: the pointer must outlive the call
    require_cpu().head_f32(_desc(xs), w.data_ptr(), _ptr(bias), w.shape[0],
                           HEAD_OPS.index(op), _desc(out), index_kind, num_threads(), isa_arg)  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------------
# fp32 kernels over bf16 storage: what a bf16 engine runs where the CPU has no bf16 hardware (issue 25)
# ---------------------------------------------------------------------------------------------------


def _require_bf16(named: dict[str, Tensor | None]) -> None:
    for name, t in named.items():
        if t is not None and (t.dtype != torch.bfloat16 or t.device.type != "cpu"):
            raise ValueError(f"{name} is {t.dtype} on {t.device}; the fp32 kernels over bf16 storage take bf16 "
                             "CPU tensors")  # fmt: skip


def _bias32(bias: Tensor | None) -> Tensor | None:
    """A bias of any float dtype used as fp32, as every bf16 kernel takes it."""
    if isinstance(bias, Tensor) and bias.is_floating_point() and bias.dtype != torch.float32:
        return bias.detach().to(torch.float32)
    return bias


def _as_f32(v: InputView) -> InputView:
    """The view with its tensor as fp32 (exact: every bf16 value is an fp32 value)."""
    return InputView(v.tensor.float(), v.resample, v.offset, v.size)


def round_to_bf16(weight: Tensor) -> Tensor:
    """A weight as the bf16 engine holds it, in fp32: rounded once to bf16 (like every bf16 kernel's)."""
    return weight.detach().to(device="cpu").to(torch.bfloat16).float().contiguous()


def conv2d_on_bf16(inputs: Sequence[Tensor | InputView], packed_weight: Tensor, bias: Tensor | None = None, *,
                   stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
                   dilation: int | Sequence[int] = 1, act: str = "none", negative_slope: float = 0.01,
                   residual: Tensor | None = None, out: Tensor | None = None, pool_out: Tensor | None = None,
                   isa: str | None = None) -> Tensor:  # fmt: skip
    """spec.conv2d on bf16 CPU tensors by the fp32 direct convolution: the views read as fp32 (exact), the OIHW
    fp32 `packed_weight` (round_to_bf16 of the engine's weight), fp32 accumulation, epilogue and pool in fp32,
    then out and pool_out rounded once to bf16 (nearest even). The gather runs on vector variant `isa`; a bias
    of any float dtype is used as fp32. Returns out (allocated if None). Raises ValueError for non-bf16
    tensors and everything spec.conv2d refuses (shapes, overlapping outputs)."""
    checks.check_conv_outputs(inputs, residual, out, pool_out)
    bias = _bias32(bias)
    g = checks.check_conv2d(inputs, packed_weight, bias, stride=stride, padding=padding, dilation=dilation,
                            act=act, residual=residual, out=out, pool_out=pool_out,
                            weight_shape=tuple(packed_weight.shape))  # fmt: skip
    _require_bf16({f"inputs[{i}]": v.tensor for i, v in enumerate(g.views)}
                  | {"residual": g.residual, "out": g.out, "pool_out": g.pool_out})  # fmt: skip
    out32 = _scratch("out_on_bf16", tuple(g.out.shape))
    pool32 = None if g.pool_out is None else _scratch("pool_on_bf16", tuple(g.pool_out.shape))
    _conv2d_direct([_as_f32(v) for v in g.views], packed_weight, bias, stride=g.stride, padding=g.padding,
                   dilation=g.dilation, act=act, negative_slope=negative_slope,
                   residual=None if g.residual is None else g.residual.float(), out=out32, pool_out=pool32,
                   isa=isa)  # fmt: skip
    g.out.copy_(out32)
    if g.pool_out is not None:
        g.pool_out.copy_(pool32)
    return g.out


def conv_transpose2x2_on_bf16(x: Tensor, packed: ConvTransposeWeight, bias: Tensor | None = None, *,
                              act: str = "none", negative_slope: float = 0.01,
                              out: Tensor | None = None) -> Tensor:  # fmt: skip
    """spec.conv_transpose2x2 on bf16 CPU tensors by the fp32 kernel (packed from round_to_bf16 of the weight):
    x read as fp32, the result rounded once to bf16 into `out` (allocated if None; a slot is fine)."""
    if not isinstance(packed, ConvTransposeWeight):
        raise ValueError("packed must be what pack_conv_transpose_weight returns")
    bias = _bias32(bias)
    out = checks.check_conv_transpose2x2(x, packed.panels, bias, out, weight_shape=tuple(packed.shape))
    _require_bf16({"x": x, "out": out})
    checks.check_no_overlap(out, "out", {"x": x})
    out32 = _scratch("out_on_bf16", tuple(out.shape))
    conv_transpose2x2(x.float(), packed, bias, act=act, negative_slope=negative_slope, out=out32)
    return out.copy_(out32)


def head_on_bf16(x: Tensor | InputView, packed: HeadWeight, bias: Tensor | None = None, op: str = "softmax",
                 out: Tensor | None = None) -> Tensor:  # fmt: skip
    """spec.head on a bf16 CPU view by the fp32 head (packed from round_to_bf16 of the weight): the view read as
    fp32, scores written as fp32 (`out` fp32, or allocated: fp32) or rounded once into a bf16 `out`; argmax:
    the class map."""
    if not isinstance(x, (Tensor, InputView)):
        raise ValueError(f"x must be a Tensor or an InputView, got {type(x).__name__}")
    view = as_view(x)
    _require_bf16({"x": view.tensor})
    bias = _bias32(bias)
    if isinstance(out, Tensor) and out.dtype == torch.bfloat16:
        checks.check_no_overlap(out, "out", {"x": view.tensor})
        scores = head(_as_f32(view), packed, bias, op, _scratch("out_on_bf16", tuple(out.shape)))
        return out.copy_(scores)
    if isinstance(out, Tensor):
        checks.check_no_overlap(out, "out", {"x": view.tensor})
    return head(_as_f32(view), packed, bias, op, out)


# ---------------------------------------------------------------------------------------------------
# Registry entries (kernels/registry.py): per vector variant, every fp32 op, and the fp32 kernels over bf16
# storage (candidates only where the engine has no bf16 tile backend)
# ---------------------------------------------------------------------------------------------------


def _no_tiles_gate(context: registry.Context) -> str | None:
    """fp32 kernels over bf16 storage run a bf16 engine's convs, transposed convs and head only where no tile
    backend is chosen (no bf16 hardware, or UNET_FAST_KERNELS bf16=none); '' elsewhere (not named)."""
    return None if context.row("bf16") is None else ""


def _direct_run(isa: str):
    def run(inputs: Sequence[Tensor | InputView], packed: Tensor, bias: Tensor | None = None, *,
            stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1,
            act: str = "none", negative_slope: float = 0.01, residual: Tensor | None = None,
            out: Tensor | None = None, pool_out: Tensor | None = None) -> Tensor:  # fmt: skip
        checks.check_conv_outputs(inputs, residual, out, pool_out)
        return _conv2d_direct(inputs, packed, bias, stride=stride, padding=padding, dilation=dilation, act=act,
                              negative_slope=negative_slope, residual=residual, out=out, pool_out=pool_out,
                              isa=isa)  # fmt: skip

    return run


def _conv_on_bf16_run(isa: str):
    def run(inputs: Sequence[Tensor | InputView], packed: Tensor, bias: Tensor | None = None, *,
            stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1,
            act: str = "none", negative_slope: float = 0.01, residual: Tensor | None = None,
            out: Tensor | None = None, pool_out: Tensor | None = None) -> Tensor:  # fmt: skip
        return conv2d_on_bf16(inputs, packed, bias, stride=stride, padding=padding, dilation=dilation, act=act,
                              negative_slope=negative_slope, residual=residual, out=out, pool_out=pool_out,
                              isa=isa)  # fmt: skip

    return run


def _pool_run(isa: str):
    def run(x: Tensor, out: Tensor | None = None) -> Tensor:
        return maxpool2x2(x, out, isa=isa)

    return run


def _concat_run(isa: str):
    def run(inputs: Sequence[Tensor | InputView], out: Tensor | None = None) -> Tensor:
        return upsample_concat(inputs, out, isa=isa)

    return run


def _oihw(weight: Tensor, dtype: torch.dtype) -> Tensor:
    return weight.detach().to(device="cpu", dtype=torch.float32).contiguous()


def _oihw_bf16(weight: Tensor, dtype: torch.dtype) -> Tensor:
    return round_to_bf16(weight)


def _packer(fn, isa: str, rounded: bool):
    def pack(weight: Tensor, dtype: torch.dtype) -> Any:
        return fn(round_to_bf16(weight) if rounded else weight, torch.float32, isa=isa)

    return pack


def _f32_scores(dtype: torch.dtype) -> torch.dtype:
    return torch.float32


def _register() -> None:
    f32, bf16 = (torch.float32,), (torch.bfloat16,)
    for v in cpu_isa.registry():
        isa = v.name
        common = dict(backend="cpu", isa=isa, family="cpu", row=isa)
        on_bf16 = dict(common, dtypes=bf16, gate=_no_tiles_gate, rank=10)
        registry.register(
            registry.Kernel(f"cpu.conv2d.direct.{isa}", Conv, dtypes=f32, run=_direct_run(isa), pack=_oihw,
                            algorithm="direct conv (oneDNN) + fused epilogue", rank=10, **common),  # type: ignore[arg-type]
            registry.Kernel(f"cpu.conv_transpose2x2.{isa}", ConvTranspose2x2, dtypes=f32, run=conv_transpose2x2,
                            pack=_packer(pack_conv_transpose_weight, isa, False),
                            algorithm="transposed conv: GEMM + scatter epilogue", rank=10, **common),  # type: ignore[arg-type]
            registry.Kernel(f"cpu.head.{isa}", Head, dtypes=f32, run=head, pack=_packer(pack_head_weight, isa, False),
                            algorithm="head: 1x1 + per-pixel op", rank=10, **common),  # type: ignore[arg-type]
            registry.Kernel(f"cpu.maxpool2x2.{isa}", Pool, dtypes=f32, run=_pool_run(isa), algorithm="max-pool 2x2",
                            rank=10, **common),  # type: ignore[arg-type]
            registry.Kernel(f"cpu.upsample_concat.{isa}", Concat, dtypes=f32, run=_concat_run(isa),
                            algorithm="concat / resample gather", rank=10, **common),  # type: ignore[arg-type]
            registry.Kernel(f"cpu.conv2d.fp32_on_bf16.{isa}", Conv, run=_conv_on_bf16_run(isa), pack=_oihw_bf16,
                            algorithm="fp32 direct conv (oneDNN) on bf16 storage", **on_bf16),  # type: ignore[arg-type]
            registry.Kernel(f"cpu.conv_transpose2x2.fp32_on_bf16.{isa}", ConvTranspose2x2,
                            run=conv_transpose2x2_on_bf16, pack=_packer(pack_conv_transpose_weight, isa, True),
                            algorithm="fp32 transposed conv on bf16 storage", **on_bf16),  # type: ignore[arg-type]
            registry.Kernel(f"cpu.head.fp32_on_bf16.{isa}", Head, run=head_on_bf16,
                            pack=_packer(pack_head_weight, isa, True), algorithm="fp32 head on bf16 storage",
                            scores_dtype=_f32_scores, **on_bf16),  # type: ignore[arg-type]
        )  # fmt: skip


_register()


__all__ = [
    "ConvTransposeWeight",
    "ConvWeight",
    "HeadWeight",
    "activation",
    "conv2d",
    "conv2d_on_bf16",
    "conv_transpose2x2",
    "conv_transpose2x2_on_bf16",
    "head",
    "head_on_bf16",
    "maxpool2x2",
    "num_threads",
    "pack_conv_transpose_weight",
    "pack_conv_weight",
    "pack_head_weight",
    "round_to_bf16",
    "upsample_concat",
]
