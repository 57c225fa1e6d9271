"""Typed launchers over unet_fast._cuda: the backend interface of kernels/spec.py on CUDA tensors.

All argument checking happens here (the contract's checks.py, then what this backend adds: CUDA device,
supported dtype, one storage dtype per call); the C++ side re-checks only what could write out of bounds.
Kernels run on the current torch CUDA stream of the tensors' device. Kernel sources: csrc/cuda/<op>.cu.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from unet_fast._ext import require_cuda
from unet_fast.graph.ir import Concat, Conv, ConvTranspose2x2, Head, Pool, Step
from unet_fast.kernels import checks, registry
from unet_fast.kernels.spec import ACTIVATIONS, HEAD_OPS, Activation, HeadOp, InputView

SUPPORTED_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float16, torch.bfloat16)
# Codes of unet_fast::DType (csrc/include/unet_fast/cuda_launch.h).
DTYPE_CODES: dict[torch.dtype, int] = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2,
                                       torch.uint8: 3, torch.int32: 4, torch.int64: 5}  # fmt: skip
_RESAMPLE_CODES = {None: 0, "nearest": 1, "bilinear": 2}
# The conv kernels walk the reduction in tiles of BLOCK_K channels of one filter tap; packed weights pad
# each tap's channels to a multiple of it (csrc/include/unet_fast/cuda_conv_tiles.h).
BLOCK_K: dict[torch.dtype, int] = {torch.float32: 16, torch.float16: 32, torch.bfloat16: 32}
MAX_VIEWS = 4  # kMaxViews in cuda_conv_tiles.h: inputs of one virtual concat
MAX_HEAD_CLASSES = 256  # the head keeps a pixel's K scores in shared memory


def current_stream() -> int:
    return torch.cuda.current_stream().cuda_stream


# ---------------------------------------------------------------------------------------------------
# Packed weights (built once at optimize time)
# ---------------------------------------------------------------------------------------------------


class _PackedData:
    """device/dtype of a packed weight are those of its `data` (what the launchers check)."""

    data: Tensor

    @property
    def device(self) -> torch.device:
        return self.data.device

    @property
    def dtype(self) -> torch.dtype:
        return self.data.dtype


@dataclass(frozen=True)
class PackedConvWeight(_PackedData):
    """Conv weight as the kernels read it: [Cout, k_row] in the storage dtype. Reduction index
    k = tap * cin_pad + c with each tap's channels zero-padded to cin_pad (a multiple of BLOCK_K[dtype]),
    or, with `taps_packed` (cin < BLOCK_K: a first layer), k = tap * cin + c padded once at the end, so a
    3-channel conv does not multiply mostly zeros. `shape` is the logical OIHW shape."""

    data: Tensor
    shape: tuple[int, int, int, int]
    cin_pad: int
    taps_packed: bool = False


@dataclass(frozen=True)
class PackedConvTransposeWeight(_PackedData):
    """[4 * Cout, cin_pad]: row (2a + b) * Cout + co holds w[:, co, a, b]; `shape` is the IOHW shape."""

    data: Tensor
    shape: tuple[int, int, int, int]
    cin_pad: int


def _check_pack_dtype(dtype: torch.dtype) -> None:
    if dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"the CUDA backend supports {SUPPORTED_DTYPES}, got {dtype}")


def _pad_channels(w: Tensor, dtype: torch.dtype) -> tuple[Tensor, int]:
    """Pads the last dim (input channels) to a multiple of BLOCK_K[dtype]."""
    cin = w.shape[-1]
    bk = BLOCK_K[dtype]
    cin_pad = -(-cin // bk) * bk
    return F.pad(w, (0, cin_pad - cin)), cin_pad


def pack_conv_weight(weight: Tensor, dtype: torch.dtype) -> PackedConvWeight:
    """OIHW (fp32) -> [Cout, k_row] in `dtype` (PackedConvWeight says which reduction layout)."""
    _check_pack_dtype(dtype)
    if weight.dim() != 4:
        raise ValueError(f"conv weight must be OIHW [Cout, Cin, kH, kW], got shape {tuple(weight.shape)}")
    cout, cin, kh, kw = weight.shape
    w = weight.detach().float().permute(0, 2, 3, 1)  # [Cout, kH, kW, Cin]
    bk = BLOCK_K[dtype]
    if cin < bk and kh * kw > 1:
        flat = w.reshape(cout, kh * kw * cin)
        data = F.pad(flat, (0, -(-flat.shape[1] // bk) * bk - flat.shape[1]))
        return PackedConvWeight(data.to(dtype).contiguous(), tuple(weight.shape), cin, taps_packed=True)  # type: ignore[arg-type]
    w, cin_pad = _pad_channels(w, dtype)
    data = w.reshape(cout, -1).to(dtype).contiguous()
    return PackedConvWeight(data, tuple(weight.shape), cin_pad)  # type: ignore[arg-type]


def pack_conv_transpose_weight(weight: Tensor, dtype: torch.dtype) -> PackedConvTransposeWeight:
    """IOHW [Cin, Cout, 2, 2] (fp32) -> [4 * Cout, cin_pad] in `dtype`."""
    _check_pack_dtype(dtype)
    if weight.dim() != 4 or tuple(weight.shape[2:]) != (2, 2):
        raise ValueError(f"transposed-conv weight must be IOHW [Cin, Cout, 2, 2], got {tuple(weight.shape)}")
    cin, cout = weight.shape[:2]
    w = weight.detach().float().permute(2, 3, 1, 0).reshape(4 * cout, cin)
    w, cin_pad = _pad_channels(w, dtype)
    return PackedConvTransposeWeight(w.to(dtype).contiguous(), tuple(weight.shape), cin_pad)  # type: ignore[arg-type]


def pack_head_weight(weight: Tensor, dtype: torch.dtype) -> Tensor:
    """[K, C, 1, 1] or [K, C] -> contiguous fp32 [K, C] (the head accumulates in fp32 for every dtype)."""
    _check_pack_dtype(dtype)
    if weight.dim() not in (2, 4) or (weight.dim() == 4 and tuple(weight.shape[2:]) != (1, 1)):
        raise ValueError(f"head weight must be [K, C] or [K, C, 1, 1], got {tuple(weight.shape)}")
    return weight.detach().float().reshape(weight.shape[0], -1).contiguous()


# ---------------------------------------------------------------------------------------------------
# Backend-specific checks and argument marshalling
# ---------------------------------------------------------------------------------------------------


def _check_dtype(dtype: torch.dtype) -> int:
    """The dtype code of a supported storage dtype."""
    if dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"the CUDA backend supports {SUPPORTED_DTYPES}, got {dtype}")
    return DTYPE_CODES[dtype]


def _check_cuda_device(**tensors: Tensor | None) -> None:
    for name, t in tensors.items():
        if t is not None and t.device.type != "cuda":
            raise ValueError(f"{name} is on {t.device}; the CUDA backend needs CUDA tensors")


def _check_cuda(dtype: torch.dtype, **tensors: Tensor | None) -> int:
    """Every tensor on a CUDA device, `dtype` supported; returns the dtype code."""
    _check_cuda_device(**tensors)
    return _check_dtype(dtype)


def _check_same_dtype(dtype: torch.dtype, **tensors: Tensor | None) -> None:
    for name, t in tensors.items():
        if t is not None and t.dtype != dtype:
            raise ValueError(f"{name} has dtype {t.dtype}; the CUDA kernels keep one storage dtype ({dtype})")


def _check_bias(bias: Tensor | None) -> None:
    if bias is not None and (bias.dtype != torch.float32 or not bias.is_contiguous()):
        raise ValueError(f"bias must be a contiguous float32 tensor, got {bias.dtype}")


def _check_packed(packed: PackedConvWeight | PackedConvTransposeWeight, dtype: torch.dtype) -> None:
    if packed.dtype != dtype:
        raise ValueError(
            f"the weight was packed for {packed.dtype}, the inputs are {dtype}: pack it for {dtype}"
        )
    # The kernels read weight k-tiles as 16-byte vectors (cp.async / float4).
    if (
        not packed.data.is_contiguous()
        or packed.data.data_ptr() % 16
        or packed.data.shape[1] % BLOCK_K[dtype]
    ):
        raise ValueError("the packed weight must be contiguous, 16-byte aligned and padded to BLOCK_K: "
                         "use the pack_* functions of this module")  # fmt: skip


def _view_tuple(v: InputView) -> list[int]:
    t = v.tensor
    rh, rw = v.source_size
    r = v.resample
    return [t.data_ptr(), t.stride(0), t.stride(1), t.stride(2), t.shape[1], t.shape[2], t.shape[3],
            _RESAMPLE_CODES[r.mode if r else None], rh, rw, int(bool(r and r.align_corners)),
            v.offset[0], v.offset[1]]  # fmt: skip


def _ptr_strides(t: Tensor | None) -> list[int]:
    return [0, 0, 0, 0] if t is None else [t.data_ptr(), t.stride(0), t.stride(1), t.stride(2)]


def _bias_ptr(bias: Tensor | None) -> int:
    return 0 if bias is None else bias.data_ptr()


# ---------------------------------------------------------------------------------------------------
# The ops
# ---------------------------------------------------------------------------------------------------


def conv2d_args(inputs: Sequence[Tensor | InputView], packed_weight: PackedConvWeight, bias: Tensor | None = None,
                *, stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
                dilation: int | Sequence[int] = 1, act: Activation = "none", negative_slope: float = 0.01,
                residual: Tensor | None = None, out: Tensor | None = None, pool_out: Tensor | None = None,
                require_device: bool = True) -> tuple[Tensor, list]:  # fmt: skip
    """Checks a conv2d call and returns (out, the extension's arguments before the stream). Split from
    conv2d so the host-side test harness (tests/kernels/cuda/) runs the kernels' index math on exactly the
    arguments the GPU would get (with CPU tensors: require_device=False)."""
    if not isinstance(packed_weight, PackedConvWeight):
        raise ValueError(f"weight must come from pack_conv_weight, got {type(packed_weight).__name__}")
    g = checks.check_conv2d(inputs, packed_weight.data, bias, stride=stride, padding=padding, dilation=dilation,
                            act=act, residual=residual, out=out, pool_out=pool_out,
                            weight_shape=packed_weight.shape)  # fmt: skip
    x0 = g.views[0].tensor
    code = _check_dtype(x0.dtype)
    if require_device:
        _check_cuda_device(inputs=x0, weight=packed_weight.data, bias=bias, out=g.out)
    _check_same_dtype(x0.dtype, out=g.out, pool_out=g.pool_out, residual=g.residual)
    _check_packed(packed_weight, x0.dtype)
    _check_bias(bias)
    if len(g.views) > MAX_VIEWS:
        # A kernel limit: the registry's `supports` keeps such steps off this kernel at prepare time.
        raise ValueError(
            f"the CUDA conv reads at most {MAX_VIEWS} inputs (a virtual concat), got {len(g.views)}"
        )
    geom = [g.batch, *g.in_size, g.in_channels, packed_weight.cin_pad, g.out_channels, *g.kernel, *g.stride,
            *g.padding, *g.dilation, *g.out_size, int(packed_weight.taps_packed)]  # fmt: skip
    args = [code, [_view_tuple(v) for v in g.views], packed_weight.data.data_ptr(), _bias_ptr(bias),
            _ptr_strides(g.residual), _ptr_strides(g.out), _ptr_strides(g.pool_out), geom, g.act_index,
            float(negative_slope)]  # fmt: skip
    return g.out, args


def conv2d(inputs: Sequence[Tensor | InputView], packed_weight: PackedConvWeight, bias: Tensor | None = None, *,
           stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1,
           act: Activation = "none", negative_slope: float = 0.01, residual: Tensor | None = None,
           out: Tensor | None = None, pool_out: Tensor | None = None) -> Tensor:  # fmt: skip
    """spec.conv2d on CUDA: implicit GEMM (tensor cores for fp16/bf16, SIMT FMA for fp32), bias + residual +
    activation and the optional 2x2 pool in the epilogue; `out`/`pool_out` may be channel slots."""
    out, args = conv2d_args(inputs, packed_weight, bias, stride=stride, padding=padding, dilation=dilation,
                            act=act, negative_slope=negative_slope, residual=residual, out=out,
                            pool_out=pool_out)  # fmt: skip
    ext = require_cuda()
    with torch.cuda.device(out.device):
        ext.conv2d(*args, current_stream())
    return out


def conv_transpose2x2_args(x: Tensor, packed: PackedConvTransposeWeight, bias: Tensor | None = None, *,
                           act: Activation = "none", negative_slope: float = 0.01, out: Tensor | None = None,
                           require_device: bool = True) -> tuple[Tensor, list]:  # fmt: skip
    """Checks a conv_transpose2x2 call; returns (out, the extension's arguments before the stream)."""
    if not isinstance(packed, PackedConvTransposeWeight):
        raise ValueError(f"weight must come from pack_conv_transpose_weight, got {type(packed).__name__}")
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; expected one of {ACTIVATIONS}")
    out = checks.check_conv_transpose2x2(x, packed.data, bias, out, weight_shape=packed.shape)
    code = _check_dtype(x.dtype)
    if require_device:
        _check_cuda_device(x=x, weight=packed.data, bias=bias, out=out)
    _check_same_dtype(x.dtype, out=out)
    _check_packed(packed, x.dtype)
    _check_bias(bias)
    n, h, w, cin = x.shape
    geom = [n, h, w, cin, packed.cin_pad, packed.shape[1]]
    args = [code, _view_tuple(InputView(x)), packed.data.data_ptr(), _bias_ptr(bias), _ptr_strides(out), geom,
            ACTIVATIONS.index(act), float(negative_slope)]  # fmt: skip
    return out, args


def conv_transpose2x2(x: Tensor, packed: PackedConvTransposeWeight, bias: Tensor | None = None, *,
                      act: Activation = "none", negative_slope: float = 0.01, out: Tensor | None = None) -> Tensor:  # fmt: skip
    """spec.conv_transpose2x2 on CUDA: a GEMM over the input pixels whose epilogue scatters each pixel's
    2x2 output block (straight into a channel slot when `out` is one)."""
    out, args = conv_transpose2x2_args(x, packed, bias, act=act, negative_slope=negative_slope, out=out)
    ext = require_cuda()
    with torch.cuda.device(out.device):
        ext.conv_transpose2x2(*args, current_stream())
    return out


def upsample_concat(inputs: Sequence[Tensor | InputView], out: Tensor | None = None) -> Tensor:
    """spec.upsample_concat on CUDA: each view is written into its channel range of `out`."""
    views, out = checks.check_upsample_concat(inputs, out)
    dtype = views[0].tensor.dtype
    code = _check_cuda(dtype, inputs=views[0].tensor, out=out)
    _check_same_dtype(dtype, out=out)
    ext = require_cuda()
    n, h, w, _ = out.shape
    with torch.cuda.device(out.device):
        c0 = 0
        for v in views:
            slot = out[..., c0 : c0 + v.channels]
            ext.view_copy(code, _view_tuple(v), *_ptr_strides(slot), n, h, w, current_stream())
            c0 += v.channels
    return out


def maxpool2x2(x: Tensor, out: Tensor | None = None) -> Tensor:
    """spec.maxpool2x2 on CUDA (floored; NaN propagates)."""
    out = checks.check_maxpool2x2(x, out)
    code = _check_cuda(x.dtype, x=x, out=out)
    _check_same_dtype(x.dtype, out=out)
    ext = require_cuda()
    n, h, w, c = x.shape
    with torch.cuda.device(x.device):
        ext.maxpool2x2(code, x.data_ptr(), x.stride(0), x.stride(1), x.stride(2), h, w, *_ptr_strides(out), n, c,
                       current_stream())  # fmt: skip
    return out


def head(x: Tensor | InputView, packed: Tensor, bias: Tensor | None = None, op: HeadOp = "softmax",
         out: Tensor | None = None) -> Tensor:  # fmt: skip
    """spec.head on CUDA: 1x1 conv + softmax / sigmoid / argmax / logits, one thread per pixel."""
    if not isinstance(packed, Tensor) or packed.dim() != 2 or packed.dtype != torch.float32:
        raise ValueError("head weight must come from pack_head_weight (a float32 [K, C] tensor)")
    view, out = checks.check_head(x, packed, bias, op, out)
    dtype = view.tensor.dtype
    k = packed.shape[0]
    if k > MAX_HEAD_CLASSES:
        raise ValueError(f"the CUDA head supports at most {MAX_HEAD_CLASSES} classes, got {k}")
    if not packed.is_contiguous():
        raise ValueError("head weight must be contiguous (use pack_head_weight)")
    code = _check_cuda(dtype, x=view.tensor, weight=packed, bias=bias, out=out)
    if op != "argmax":
        _check_same_dtype(dtype, out=out)
    _check_bias(bias)
    ext = require_cuda()
    n, h, w = out.shape[:3]
    with torch.cuda.device(view.tensor.device):
        ext.head(code, DTYPE_CODES[out.dtype], _view_tuple(view), packed.data_ptr(), _bias_ptr(bias), k,
                 HEAD_OPS.index(op), *_ptr_strides(out)[:4], n, h, w, current_stream())  # fmt: skip
    return out


def activation(
    x: Tensor, act: str = "relu", negative_slope: float = 0.01, out: Tensor | None = None
) -> Tensor:
    """Elementwise activation of a contiguous fp32 CUDA tensor (the extension's smoke-test op)."""
    ext = require_cuda()
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; expected one of {ACTIVATIONS}")
    if x.device.type != "cuda" or x.dtype != torch.float32 or not x.is_contiguous():
        raise ValueError(f"expected a contiguous float32 CUDA tensor, got {x.dtype} on {x.device}")
    out = torch.empty_like(x) if out is None else out
    if out.shape != x.shape or out.dtype != x.dtype or not out.is_contiguous() or out.device != x.device:
        raise ValueError(f"out must be a contiguous float32 tensor of shape {tuple(x.shape)} on {x.device}")
    with torch.cuda.device(x.device):
        ext.activation_f32(x.data_ptr(), out.data_ptr(), x.numel(), ACTIVATIONS.index(act), float(negative_slope),
                           current_stream())  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------------
# Registry entries (kernels/registry.py): one kernel per op; its limits are `supports`, known from the step
# ---------------------------------------------------------------------------------------------------


def conv_supports(step: Step, dtype: torch.dtype) -> str | None:
    assert isinstance(step, Conv)
    if len(step.inputs) > MAX_VIEWS:
        return f"the CUDA conv reads at most {MAX_VIEWS} inputs of a virtual concat, this one {len(step.inputs)}"
    return None


def head_supports(step: Step, dtype: torch.dtype) -> str | None:
    assert isinstance(step, Head)
    if step.weight.shape[0] > MAX_HEAD_CLASSES:
        return f"the CUDA head supports at most {MAX_HEAD_CLASSES} classes, this one {step.weight.shape[0]}"
    return None


registry.register(
    registry.Kernel("cuda.conv2d", Conv, "cuda", SUPPORTED_DTYPES, conv2d, conv_supports, pack_conv_weight,
                    isa="cuda", algorithm="implicit GEMM conv (views and epilogue fused)"),
    registry.Kernel("cuda.conv_transpose2x2", ConvTranspose2x2, "cuda", SUPPORTED_DTYPES, conv_transpose2x2,
                    pack=pack_conv_transpose_weight, isa="cuda", algorithm="transposed conv: GEMM + scatter"),
    registry.Kernel("cuda.upsample_concat", Concat, "cuda", SUPPORTED_DTYPES, upsample_concat, isa="cuda",
                    algorithm="concat / resample gather"),
    registry.Kernel("cuda.maxpool2x2", Pool, "cuda", SUPPORTED_DTYPES, maxpool2x2, isa="cuda",
                    algorithm="max-pool 2x2"),
    registry.Kernel("cuda.head", Head, "cuda", SUPPORTED_DTYPES, head, head_supports, pack_head_weight, isa="cuda",
                    algorithm="head: 1x1 + per-pixel op"),
)  # fmt: skip
