"""Typed launchers over unet_fast._C (the C++ CPU ops): the `cpu` backend's kernel module.

It exposes the backend interface at the bottom of kernels/spec.py with the same semantics. All argument
checking happens here (kernels/checks.py, plus this backend's own constraints: CPU tensors, fp32); the
C++ side re-checks only what could read or write out of bounds. Threads follow torch.get_num_threads().

Design (docs/architecture.md, "The CPU backend"):
- Every C++ op is compiled once per CPU kernel variant (kernels/cpu_isa.py: portable, portable16, avx2,
  avx512, ...). Weight-bearing ops choose theirs when the weight is packed (`isa=`, else UNET_FAST_CPU_ISA,
  else the best this CPU runs), because the packed layout is the variant's; the packed weight carries it.
  Ops without weights take `isa=` per call (None: the same rule).
- conv2d: 3x3 stride-1 convs with >= 16 input channels run the Winograd F(4x4, 3x3) kernel
  (kernels/cpu_winograd.py: 4x fewer multiplies, views and epilogue fused; pack with exact=True to refuse
  it; cpu_winograd.winograd_decision is the one place that decides). Other convs: the views (virtual concat, resample-on-read, crop / pad window) are gathered by the C++
  `gather_view` into one contiguous NHWC scratch (skipped when the input already is one), the convolution
  runs in PyTorch (oneDNN on a channels_last view of that NHWC memory, no bias), and one C++ epilogue pass
  writes act(acc + bias + residual) into the output slot and the 2x2 max-pool into pool_out.
- conv_transpose2x2: one C++ register-blocked GEMM [N*H*W, Cin] x [Cin, 4*Cout] whose tiles apply the
  epilogue (bias, activation) and store straight into the output pixels (2i + a, 2j + b) of the slot.
- upsample_concat, maxpool2x2, head: fully C++ (one pass each).
- bf16 (issue 17): convs on the bf16 tile kernels (kernels/cpu_bf16.py), except the 3x3 stride-1 ones that
  cpu_winograd.bf16_winograd_decision gives the Winograd kernel on bf16 activations (every tile backend but
  AMX, decided at pack time); head / pool / concat / resample on the bf16 ops (kernels/cpu_bf16_ops.py).
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
from unet_fast.kernels import checks, cpu_isa, cpu_winograd
from unet_fast.kernels.cpu_desc import nhwc_desc as _desc
from unet_fast.kernels.cpu_desc import view_source
from unet_fast.kernels.spec import ACTIVATIONS, HEAD_OPS, InputView, as_view

# Engine dtypes: fp32 runs every op here; bf16 runs the convs on the bf16 tile kernels (kernels/cpu_bf16.py) or
# the bf16 Winograd (kernels/cpu_winograd.py, 3x3 stride 1, bf16_winograd_decision), head / pool / concat on
# the bf16 ops (kernels/cpu_bf16_ops.py) and the steps `supports` turns down on the torch reference. fp16 is
# rejected with a ValueError.
SUPPORTED_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16)
# What the fp32 C++ ops below read and write (a bf16 tensor passed to them is an error, not a reinterpretation)
_FP32: tuple[torch.dtype, ...] = (torch.float32,)
# Class-map dtypes of head(op="argmax"), in the C++ IndexKind order.
_INDEX_KINDS = (torch.uint8, torch.int32, torch.int64)


def num_threads() -> int:
    """The thread count every CPU op uses: torch's, so the two never oversubscribe the cores."""
    return max(1, torch.get_num_threads())


# ---------------------------------------------------------------------------------------------------
# This backend's own checks and the tensor descriptors the C++ ops take
# ---------------------------------------------------------------------------------------------------


def _check_dtype(dtype: torch.dtype) -> None:
    if dtype not in _FP32:
        raise ValueError(f"the cpu backend supports dtypes {_FP32} in this kernel, got {dtype} (a bf16 engine "
                         "runs its steps on the bf16 kernels: kernels/cpu_bf16.py, cpu_bf16_ops.py, the bf16 "
                         "Winograd)")  # fmt: skip


def _check_cpu(named: dict[str, Tensor | None], *, float_only: bool = True) -> None:
    for name, t in named.items():
        if t is None:
            continue
        if t.device.type != "cpu":
            raise ValueError(f"{name} is on {t.device}; the cpu backend needs CPU tensors")
        if float_only and t.dtype not in _FP32:
            raise ValueError(f"{name} has dtype {t.dtype}; the cpu backend supports {_FP32} in this kernel "
                             "(a bf16 engine runs it on the torch reference)")  # fmt: skip


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
    UNET_FAST_CPU_ISA, else the best this CPU runs; kernels/cpu_isa.py)."""
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
    """2x2 stride-2 max-pool of NHWC `x` (floored) into `out` (allocated if None; a slot is fine). `isa`
    picks the kernel variant (kernels/cpu_isa.py; tests run each). A bf16 `x` runs the bf16 op
    (kernels/cpu_bf16_ops.py; one baseline build, `isa` does not apply)."""
    if isinstance(x, Tensor) and x.dtype == torch.bfloat16:
        from unet_fast.kernels import cpu_bf16_ops

        return cpu_bf16_ops.maxpool2x2(x, out)
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
    """Materialise the views side by side along channels into `out` (a channel slot is fine). `isa` picks
    the kernel variant (kernels/cpu_isa.py; tests run each). bf16 views run the bf16 gather
    (kernels/cpu_bf16_ops.py; `isa` does not apply)."""
    first = inputs[0] if isinstance(inputs, Sequence) and len(inputs) > 0 else None
    if isinstance(first, (Tensor, InputView)) and as_view(first).tensor.dtype == torch.bfloat16:
        from unet_fast.kernels import cpu_bf16_ops

        return cpu_bf16_ops.upsample_concat(inputs, out)
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
    """A conv weight packed for CPU kernel variant `isa`: OIHW fp32 for direct convolution (oneDNN, then the
    variant's gather and epilogue), and, where cpu_winograd.winograd_decision chose it at pack time, the
    Winograd-transformed weight in the variant's layout (calls Winograd cannot take still run direct)."""

    oihw: Tensor
    isa: str
    winograd: cpu_winograd.WinogradWeight | None = None

    @property
    def algorithm(self) -> str:
        """Named per step in FusedUNet.report(): the algorithm and the variant ('' for direct convolution)."""
        return f"Winograd F(4x4,3x3), {self.isa}" if self.winograd is not None else ""

    @property
    def shape(self) -> torch.Size:
        return self.oihw.shape


def pack_conv_weight(weight: Tensor, dtype: torch.dtype, *, exact: bool = False,
                     isa: str | None = None) -> ConvWeight:  # fmt: skip
    """OIHW -> ConvWeight for kernel variant `isa` (None: UNET_FAST_CPU_ISA, else the best this CPU runs):
    the contiguous, detached fp32 OIHW weight PyTorch's convolution takes, plus the Winograd transform where
    cpu_winograd.winograd_decision picks it (3x3 with enough input channels to profit, not `exact`).
    dtype bf16: the bf16 tile layout (TileConvWeight, on the tile backend chosen once here), plus the bf16
    Winograd weight for variant `isa` where cpu_winograd.bf16_winograd_decision picks it (not `exact`).
    Raises ValueError for a dtype other than fp32 / bf16, a weight that is not 4-D, or an unknown /
    unrunnable isa."""
    if dtype == torch.bfloat16:
        variant = cpu_isa.choose(isa, what="conv2d")  # checked for every weight, not only the Winograd ones
        tiles = _pack_tiles(weight, "conv")
        assert isinstance(tiles, TileConvWeight)
        if cpu_winograd.bf16_winograd_decision(tiles.shape, tile_backend=tiles.backend, exact=exact):
            return tiles
        wino = cpu_winograd.pack_winograd_weight(weight, isa=variant.name, io_dtype=torch.bfloat16)
        return TileConvWeight(tiles.tiles, tiles.backend, wino)
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


def _refuse_overlaps(inputs: Any, residual: Any, out: Any, pool_out: Any) -> None:
    """ValueError when out / pool_out share elements with an input view's tensor or the residual (Winograd
    reads inputs while other threads write outputs), or with each other (both written, by different threads:
    which value is left would depend on timing; the bf16 tile conv refuses it too); residual may be out
    itself (read, then written, by the same thread). Arguments not yet checked are skipped here: the shape
    checks name them."""
    if isinstance(out, Tensor) and isinstance(pool_out, Tensor) and checks.may_overlap(pool_out, out):
        raise ValueError("pool_out overlaps out: the kernel writes both, so which value is left would depend on "
                         "timing; pass separate memory")  # fmt: skip
    if not isinstance(inputs, Sequence):
        return
    srcs = {f"inputs[{i}]": v.tensor if isinstance(v, InputView) else v for i, v in enumerate(inputs)}
    srcs = {k: t for k, t in srcs.items() if isinstance(t, Tensor)}
    res = residual if isinstance(residual, Tensor) else None
    for name, o in (("out", out), ("pool_out", pool_out)):
        if isinstance(o, Tensor):
            same = name == "out" and res is not None and res.data_ptr() == o.data_ptr() and res.stride() == o.stride()
            checks.check_no_overlap(o, name, {**srcs, "residual": None if same else res})


def conv2d(inputs: Sequence[Tensor | InputView], packed_weight: ConvWeight | Tensor, bias: Tensor | None = None, *,
           stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
           dilation: int | Sequence[int] = 1, act: str = "none", negative_slope: float = 0.01,
           residual: Tensor | None = None, out: Tensor | None = None,
           pool_out: Tensor | None = None) -> Tensor:  # fmt: skip
    """spec.conv2d on CPU: Winograd where the weight was packed for it and the call fits (stride 1, padding
    0/1: cpu_winograd.winograd_decision); otherwise gather (if needed) -> PyTorch conv into a scratch -> one
    fused C++ epilogue. Runs on the weight's kernel variant (a plain OIHW tensor: direct, default variant).
    A TileConvWeight (bf16) runs the bf16 Winograd where it carries a Winograd weight and the call fits (one
    bf16 dtype for inputs, residual, out and pool_out), else the bf16 tile conv, for the calls `supports`
    accepts. ValueError when out or pool_out shares elements with an input, the residual (but out may be the
    residual itself) or each other."""
    if isinstance(packed_weight, TileConvWeight):
        return _conv2d_tiles(inputs, packed_weight, bias, stride=stride, padding=padding, dilation=dilation,
                             act=act, negative_slope=negative_slope, residual=residual, out=out,
                             pool_out=pool_out)  # fmt: skip
    _refuse_overlaps(inputs, residual, out, pool_out)
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
    _check_packed(packed_weight, "packed_weight", 4)
    g = checks.check_conv2d(inputs, packed_weight, bias, stride=stride, padding=padding, dilation=dilation,
                            act=act, residual=residual, out=out, pool_out=pool_out,
                            weight_shape=tuple(packed_weight.shape))  # fmt: skip
    _check_cpu({f"inputs[{i}]": v.tensor for i, v in enumerate(g.views)}
               | {"residual": g.residual, "out": g.out, "pool_out": g.pool_out})  # fmt: skip
    bias = _vector(bias, "bias", g.out_channels)
    x = _dense_input(g.views, isa)
    # NHWC memory seen as a channels_last NCHW tensor: oneDNN's native layout, no copy; no bias here,
    # the epilogue adds it in the pass it makes anyway.
    acc = F.conv2d(x.permute(0, 3, 1, 2), packed_weight, None, g.stride, g.padding, g.dilation)
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
    """IOHW [Cin, Cout, 2, 2] -> ConvTransposeWeight for kernel variant `isa` (None: UNET_FAST_CPU_ISA, else
    the best this CPU runs): nr-channel panels per kernel tap, contiguous fp32; dtype bf16: the bf16 tile
    layout (TileConvTransposeWeight). Raises ValueError for a dtype other than fp32 / bf16, a weight that is
    not IOHW 2x2, or an unknown / unrunnable isa."""
    if dtype == torch.bfloat16:
        return _pack_tiles(weight, "conv_transpose")
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
    """spec.conv_transpose2x2 on CPU: one C++ pass, GEMM tiles stored with their epilogue into `out`, on the
    kernel variant the weight was packed for (a TileConvTransposeWeight: the bf16 tile transposed conv)."""
    if isinstance(packed, TileConvTransposeWeight):
        from unet_fast.kernels import cpu_bf16

        return cpu_bf16.conv_transpose2x2(x, packed.tiles, bias, act=act, negative_slope=negative_slope, out=out,
                                          isa=packed.backend)  # fmt: skip
    if not isinstance(packed, ConvTransposeWeight):
        raise ValueError("packed must be what this backend's pack_conv_transpose_weight returns")
    out = checks.check_conv_transpose2x2(x, packed.panels, bias, out, weight_shape=tuple(packed.shape))
    checks.check_no_overlap(out, "out", {"x": x})
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; expected one of {ACTIVATIONS}")
    _check_cpu({"x": x, "out": out})
    bias = _vector(bias, "bias", packed.cout)
    isa_arg = cpu_isa.isa_index(packed.isa, env=None, what="conv_transpose2x2")
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
    """[K, C, 1, 1] or [K, C] -> HeadWeight for kernel variant `isa` (None: UNET_FAST_CPU_ISA, else the best
    this CPU runs); dtype bf16: a TileHeadWeight (the 1x1 tile conv layout; `isa` does not apply). Raises
    ValueError for a dtype other than fp32 / bf16, a bad shape or an unknown / unrunnable isa."""
    if dtype == torch.bfloat16:
        return _pack_tiles(weight, "head")
    _check_dtype(dtype)
    if weight.dim() not in (2, 4) or (weight.dim() == 4 and tuple(weight.shape[2:]) != (1, 1)):
        raise ValueError(f"head weight must be [K, C] or [K, C, 1, 1], got {tuple(weight.shape)}")
    variant = cpu_isa.choose(isa, what="head")
    w = weight.detach().to(device="cpu", dtype=torch.float32).reshape(weight.shape[0], -1).contiguous()
    return HeadWeight(w, variant.name)


def head(x: Tensor | InputView, packed: HeadWeight, bias: Tensor | None = None, op: str = "softmax",
         out: Tensor | None = None) -> Tensor:  # fmt: skip
    """spec.head on CPU: per pixel K dot products + softmax / sigmoid / argmax / logits, one C++ pass, on
    the kernel variant the weight was packed for. A TileHeadWeight (bf16) runs the bf16 head
    (kernels/cpu_bf16_ops.py: 1x1 on the tile conv, the per-pixel op in fp32, fused per chunk of rows)."""
    if isinstance(packed, TileHeadWeight):
        from unet_fast.kernels import cpu_bf16_ops

        return cpu_bf16_ops.head(x, packed.tiles, bias, op, out, isa=packed.backend)
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
    isa_arg = cpu_isa.isa_index(isa, env=None, what="head")
    xs = view.tensor
    if not _is_plain(view):
        xs = _gather([view], _scratch("gather", (xs.shape[0], *view.out_size, view.channels)), isa)
    index_kind = _INDEX_KINDS.index(out.dtype) if op == "argmax" else 0
    w = packed_w.contiguous()  # held in a name: the pointer must outlive the call
    require_cpu().head_f32(_desc(xs), w.data_ptr(), _ptr(bias), w.shape[0],
                           HEAD_OPS.index(op), _desc(out), index_kind, num_threads(), isa_arg)  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------------
# bf16: convs on the tile kernels (kernels/cpu_bf16.py) or the bf16 Winograd, the rest on the bf16 ops (issue 17)
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _TileWeight:
    """A weight packed once for a bf16 tile kernel, with the tile backend chosen at pack time ("portable",
    "amx" or "avx512bf16": cpu_bf16.choose_backend, so UNET_FAST_CPU_BF16_ISA is read once, not per call)."""

    tiles: Any  # cpu_bf16.ConvWeightBF16 | cpu_bf16.ConvTransposeWeightBF16 | cpu_bf16_ops.HeadWeightBF16
    backend: str

    @property
    def algorithm(self) -> str:
        """Named per step in FusedUNet.report()."""
        return self.tiles_algorithm

    @property
    def tiles_algorithm(self) -> str:
        """The tile kernel's name, also for a TileConvWeight that carries a Winograd weight but runs a call on
        the tiles (step_algorithm)."""
        return f"bf16 tiles ({self.backend})"

    @property
    def shape(self) -> torch.Size:
        return self.tiles.shape


@dataclass(frozen=True)
class TileConvWeight(_TileWeight):
    """A conv weight packed for the bf16 tile conv (cpu_bf16.conv2d) and, where
    cpu_winograd.bf16_winograd_decision chose it at pack time, for the Winograd conv on bf16 activations
    (calls Winograd cannot take, e.g. stride 2 or an fp32 out, still run on the tiles)."""

    winograd: cpu_winograd.WinogradWeight | None = None

    @property
    def algorithm(self) -> str:
        if self.winograd is not None:
            return f"Winograd F(4x4,3x3) on bf16, fp32 compute, {self.winograd.isa}"
        return super().algorithm


@dataclass(frozen=True)
class TileConvTransposeWeight(_TileWeight):
    """A 2x2 stride-2 transposed-conv weight packed for the bf16 tile transposed conv."""


@dataclass(frozen=True)
class TileHeadWeight(_TileWeight):
    """A head weight packed as a 1x1 tile conv for the bf16 head (cpu_bf16_ops.head)."""

    @property
    def algorithm(self) -> str:
        how = "direct" if self.backend == "avx512bf16" else "on tiles"  # avx512bf16: its direct conv runs the 1x1
        return f"bf16 head: 1x1 {how} ({self.backend}), per-pixel op in fp32"


def _pack_tiles(weight: Tensor, kind: str) -> TileConvWeight | TileConvTransposeWeight | TileHeadWeight:
    # imported here: cpu_bf16 imports this module's descriptors
    from unet_fast.kernels import cpu_bf16

    if not cpu_bf16.tile_backends():
        raise ValueError("unet_fast._C was built without the bf16 tile ops; rebuild it "
                         "(python setup.py build_ext --inplace)")  # fmt: skip
    backend = cpu_bf16.choose_backend().name
    w = weight.detach().to("cpu")
    if kind == "conv":
        return TileConvWeight(cpu_bf16.pack_conv_weight(w), backend)
    if kind == "head":
        from unet_fast.kernels import cpu_bf16_ops

        return TileHeadWeight(cpu_bf16_ops.pack_head_weight(w), backend)
    return TileConvTransposeWeight(cpu_bf16.pack_conv_transpose_weight(w), backend)


def _square(v: int | Sequence[int]) -> int | None:
    """v as one int when it is the same in H and W, else None."""
    a, b = (v, v) if isinstance(v, int) else tuple(v)
    return int(a) if a == b else None


def supports(step: Any, dtype: torch.dtype = torch.float32) -> str:
    """'' when this module runs the plan step `step` (graph.ir) in `dtype`, else why not (the executor then
    runs that step on the torch reference, decided at prepare time and named in the report). fp32: every
    step. bf16: Conv on the tile conv (or the bf16 Winograd: pack_conv_weight, _conv2d_tiles) when it has
    the same stride and padding in H and W, dilation 1 and a
    kernel of at most 16x16, with every fusion the fp32 conv has (a virtual concat of up to
    cpu_bf16.MAX_INPUTS views, each a channel slot read plainly, through a window / crop or a nearest /
    bilinear resample; bias, activation, residual, the 2x2 max-pool output); ConvTranspose2x2 on the tile
    transposed conv; Head (any input view), Pool, Concat / Resample on the bf16 ops of
    kernels/cpu_bf16_ops.py."""
    if dtype != torch.bfloat16:
        return ""
    from unet_fast.kernels import cpu_bf16

    if not cpu_bf16.tile_backends():
        return "unet_fast._C was built without the bf16 tile ops"
    kind = type(step).__name__
    if kind == "Conv":
        if len(step.inputs) > cpu_bf16.MAX_INPUTS:
            return f"bf16 tile conv reads up to {cpu_bf16.MAX_INPUTS} input views, this step {len(step.inputs)}"
        if step.residual is not None and not step.residual.plain:
            return "bf16 tile conv reads the residual as is"
        if _square(step.stride) is None or _square(step.padding) is None:
            return f"bf16 tile conv takes one stride / padding for H and W, not {step.stride} / {step.padding}"
        if tuple(step.dilation) != (1, 1):
            return f"bf16 tile conv has no dilation {tuple(step.dilation)}"
        if max(step.weight.shape[2:]) > 16:
            return f"bf16 tile conv takes kernels up to 16x16, not {tuple(step.weight.shape[2:])}"
        return ""
    if kind == "ConvTranspose2x2":
        return "" if step.input.plain else "bf16 tile transposed conv reads its input as is"
    if kind in _BF16_OPS:
        return ""
    return f"no bf16 {kind} kernel in the cpu backend yet"


# Plan steps without a packed weight that run on the bf16 ops (kernels/cpu_bf16_ops.py), named in the report
_BF16_OPS = {"Pool": "bf16 max-pool 2x2 (C++, exact)", "Concat": "bf16 concat / resample gather (C++)",
             "Resample": "bf16 concat / resample gather (C++)", "Head": ""}  # fmt: skip


def head_scores_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a Head step's scores (softmax / sigmoid / logits) are written in when the head's output is
    the engine's output: the bf16 head computes its per-pixel op in fp32 and keeps it (the executor then
    allocates that output buffer in fp32; the module boundary casts to the input's dtype)."""
    return torch.float32 if dtype == torch.bfloat16 else dtype


def step_algorithm(step: Any, dtype: torch.dtype, weight: Any = None) -> str:
    """What runs a plan step here, for FusedUNet.report() ('' where the packed weight says it, or in fp32,
    where every step runs the fp32 ops). A bf16 conv on the avx512bf16 backend runs its register-blocked
    direct conv unless a source is bilinear (then the tile body: csrc/cpu/amx/conv_bf16_avx512bf16.cpp
    `direct_supported`; UNET_FAST_BF16_AVX512_CONV=tile, for tests and benchmarks only, is not reflected)."""
    if dtype != torch.bfloat16:
        return ""
    if (isinstance(weight, TileConvWeight) and weight.winograd is not None
            and not cpu_winograd.geometry_reason(step.stride, step.padding, step.dilation)):  # fmt: skip
        return weight.algorithm
    if isinstance(weight, (TileConvWeight, TileConvTransposeWeight)):
        # named here, not left to weight.algorithm: a TileConvWeight that carries a Winograd weight (packed from
        # the shape alone) runs a stride-2 call on the tiles, and its `algorithm` names the Winograd
        if weight.backend != "avx512bf16":
            return weight.tiles_algorithm
        bilinear = any(getattr(getattr(v, "resample", None), "mode", None) == "bilinear"
                       for v in getattr(step, "inputs", ()))  # fmt: skip
        return "bf16 tiles (avx512bf16)" if bilinear else "bf16 direct (avx512bf16)"
    return _BF16_OPS.get(step.kind, "")


def _conv2d_tiles(inputs: Sequence[Tensor | InputView], packed: TileConvWeight, bias: Tensor | None, *,
                  stride: int | Sequence[int], padding: int | Sequence[int], dilation: int | Sequence[int],
                  act: str, negative_slope: float, residual: Tensor | None, out: Tensor | None,
                  pool_out: Tensor | None) -> Tensor:  # fmt: skip
    """conv2d for a TileConvWeight: the bf16 Winograd where the weight carries one and
    cpu_winograd.winograd_decision takes the call (stride 1, padding 0/1, all bf16), else the tile conv; the
    views (virtual concat, resample / crop on read) and pool_out go to either as they are. A call outside
    `supports` (a stride / padding that differs between H and W, dilation) raises NotImplementedError (the
    executor then runs the reference for that call and the report names it)."""
    from unet_fast.kernels import cpu_bf16

    if packed.winograd is not None:
        kw = dict(stride=stride, padding=padding, dilation=dilation, residual=residual, out=out, pool_out=pool_out)
        if not cpu_winograd.winograd_decision(packed.winograd, inputs=inputs, **kw):
            _refuse_overlaps(inputs, residual, out, pool_out)
            # the tile conv takes any float bias and uses it as fp32; the Winograd takes fp32 only
            if isinstance(bias, Tensor) and bias.is_floating_point() and bias.dtype != torch.float32:
                bias = bias.detach().to(torch.float32)
            return cpu_winograd.conv3x3_winograd(inputs, packed.winograd, bias, act=act,
                                                 negative_slope=negative_slope, **kw)  # fmt: skip
    s, p = _square(stride), _square(padding)
    if s is None or p is None or _square(dilation) != 1:
        raise NotImplementedError("the bf16 tile conv takes square stride / padding and dilation 1")
    return cpu_bf16.conv2d(list(inputs), packed.tiles, bias, stride=s, padding=p, act=act,
                           negative_slope=negative_slope, residual=residual, out=out, pool_out=pool_out,
                           isa=packed.backend)  # fmt: skip


__all__ = [
    "SUPPORTED_DTYPES",
    "ConvTransposeWeight",
    "ConvWeight",
    "HeadWeight",
    "TileConvTransposeWeight",
    "TileConvWeight",
    "TileHeadWeight",
    "activation",
    "conv2d",
    "conv_transpose2x2",
    "head",
    "head_scores_dtype",
    "maxpool2x2",
    "num_threads",
    "pack_conv_transpose_weight",
    "pack_conv_weight",
    "pack_head_weight",
    "step_algorithm",
    "supports",
    "upsample_concat",
]
