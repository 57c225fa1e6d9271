"""What every backend's fused kernels compute, written once in plain PyTorch.

This is the contract shared by the Triton kernels (kernels/triton/), the C++ CPU twins and the CUDA
kernels (csrc/, via kernels/cpu.py and kernels/cuda.py), and the engine's `torch` executor. Each kernel
file imports its reference from here (instead of keeping a private copy) so three implementations cannot
drift apart in semantics; each test compares a kernel with these functions.

Conventions
- Activations are NHWC tensors of shape [N, H, W, C] whose channel stride is 1. N/H/W strides are free,
  so a channel slice of a bigger buffer (`buf[..., a:b]`, a concat slot) is a valid input *and output*:
  a kernel writes exactly its slice and nothing else.
- An `InputView` says how a consumer reads an input: optionally resampled (nearest or bilinear, matching
  F.interpolate), then a window at `offset` of size `size` (a centre crop for valid U-Nets; a negative
  offset or a window past the edge reads zeros, which is milesial's F.pad). Several views = a virtual
  concat along channels, in order.
- Weights arrive in PyTorch's layouts (conv OIHW, transposed conv IOHW) in fp32; backends repack them
  once with their own `pack_*` functions. Bias is fp32. Accumulation is fp32 for every dtype.
- Activation order in conv: y = act(conv(x) + bias + residual); the optional pool output is the 2x2,
  stride-2 max-pool (floored like F.max_pool2d) of y.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# The IR's value types, re-exported: the kernels' API names them from here (graph/types.py is their home).
from unet_fast.graph.types import ACTIVATIONS, HEAD_OPS, Activation, HeadOp, Resample

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Parity tolerances per storage dtype, relative to an fp32 reference computed from the same (rounded)
# inputs: (atol, rtol) for torch.testing.assert_close. fp16/bf16 outputs are one rounding of an fp32
# accumulation, so their error is about one ulp of the output: 2^-11 (fp16) and 2^-8 (bf16) relative.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float32: (1e-4, 1e-4),
    torch.float16: (2e-3, 4e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
}


@dataclass(frozen=True)
class InputView:
    """Read `tensor` ([N, H, W, C]) through an optional resample, then a window at `offset` of `size`."""

    tensor: Tensor
    resample: Resample | None = None
    offset: tuple[int, int] = (0, 0)
    size: tuple[int, int] | None = None

    @property
    def source_size(self) -> tuple[int, int]:
        """(H, W) after the resample, before the window."""
        return self.resample.size if self.resample else (self.tensor.shape[1], self.tensor.shape[2])

    @property
    def out_size(self) -> tuple[int, int]:
        """(H, W) the consumer sees."""
        return self.size if self.size is not None else self.source_size

    @property
    def channels(self) -> int:
        return self.tensor.shape[3]


def as_view(x: Tensor | InputView) -> InputView:
    return x if isinstance(x, InputView) else InputView(x)


def pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def conv_output_size(size: tuple[int, int], kernel: tuple[int, int], stride: int | Sequence[int] = 1,
                     padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1) -> tuple[int, int]:  # fmt: skip
    s, p, d = pair(stride), pair(padding), pair(dilation)
    return tuple((size[i] + 2 * p[i] - d[i] * (kernel[i] - 1) - 1) // s[i] + 1 for i in range(2))  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------
# Reference implementations (fp32 math; fp64 inputs stay fp64, for tests that want a tighter truth)
# ---------------------------------------------------------------------------------------------------


def _compute_dtype(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def to_nchw(x: Tensor) -> Tensor:
    return x.permute(0, 3, 1, 2)


def to_nhwc(x: Tensor) -> Tensor:
    return x.permute(0, 2, 3, 1)


def read_view(view: InputView, dtype: torch.dtype | None = None) -> Tensor:
    """Materialise a view as an NHWC tensor (what the fused kernels never do)."""
    x = to_nchw(view.tensor).to(dtype or _compute_dtype(view.tensor))
    if view.resample is not None:
        r = view.resample
        kw = {"align_corners": r.align_corners} if r.mode == "bilinear" else {}
        x = F.interpolate(x, size=r.size, mode=r.mode, **kw)
    (top, left), (h, w) = view.offset, view.out_size
    sh, sw = x.shape[2], x.shape[3]
    # Pad (negative offset / window past the edge), then slice: zero outside the source.
    pt, pl = max(0, -top), max(0, -left)
    pb, pr = max(0, top + h - sh), max(0, left + w - sw)
    if pt or pl or pb or pr:
        x = F.pad(x, [pl, pr, pt, pb])
    x = x[:, :, top + pt : top + pt + h, left + pl : left + pl + w]
    return to_nhwc(x)


def apply_activation(y: Tensor, act: str, negative_slope: float = 0.01) -> Tensor:
    if act == "none":
        return y
    if act == "relu":
        return torch.relu(y)
    if act == "leaky_relu":
        return F.leaky_relu(y, negative_slope)
    if act == "silu":
        return F.silu(y)
    raise ValueError(f"unknown activation {act!r}; expected one of {ACTIVATIONS}")


def _write(result: Tensor, out: Tensor | None) -> Tensor:
    if out is None:
        return result
    if tuple(out.shape) != tuple(result.shape):
        raise ValueError(f"out has shape {tuple(out.shape)}, expected {tuple(result.shape)}")
    out.copy_(result)
    return out


def conv2d(inputs: Sequence[Tensor | InputView], weight: Tensor, bias: Tensor | None = None, *,
           stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1,
           act: Activation = "none", negative_slope: float = 0.01, residual: Tensor | None = None,
           out: Tensor | None = None, pool_out: Tensor | None = None) -> Tensor:  # fmt: skip
    """Fused conv: virtual concat of `inputs` -> conv (OIHW `weight`) + bias [+ residual] -> act -> `out`,
    and optionally the 2x2 max-pool of that into `pool_out`. Returns `out` (allocated if None)."""
    views = [as_view(v) for v in inputs]
    ct = _compute_dtype(views[0].tensor)
    x = torch.cat([read_view(v, ct) for v in views], dim=3)
    y = F.conv2d(to_nchw(x), weight.to(ct), None if bias is None else bias.to(ct), stride=pair(stride),
                 padding=pair(padding), dilation=pair(dilation))  # fmt: skip
    y = to_nhwc(y)
    if residual is not None:
        y = y + residual.to(ct)
    y = apply_activation(y, act, negative_slope)
    out_dtype = out.dtype if out is not None else views[0].tensor.dtype
    if pool_out is not None:
        _write(to_nhwc(F.max_pool2d(to_nchw(y), 2)).to(pool_out.dtype), pool_out)
    return _write(y.to(out_dtype), out)


def conv_transpose2x2(x: Tensor, weight: Tensor, bias: Tensor | None = None, *, act: Activation = "none",
                      negative_slope: float = 0.01, out: Tensor | None = None) -> Tensor:  # fmt: skip
    """ConvTranspose2d(kernel 2, stride 2) with IOHW `weight`: y[n, 2i+a, 2j+b] = x[n, i, j] @ w[:, :, a, b]."""
    ct = _compute_dtype(x)
    y = F.conv_transpose2d(to_nchw(x).to(ct), weight.to(ct), None if bias is None else bias.to(ct), stride=2)
    y = apply_activation(to_nhwc(y), act, negative_slope)
    return _write(y.to(out.dtype if out is not None else x.dtype), out)


def upsample_concat(inputs: Sequence[Tensor | InputView], out: Tensor | None = None) -> Tensor:
    """Materialise views side by side along channels (the standalone upsample + concat)."""
    views = [as_view(v) for v in inputs]
    y = torch.cat([read_view(v, _compute_dtype(v.tensor)) for v in views], dim=3)
    return _write(y.to(out.dtype if out is not None else views[0].tensor.dtype), out)


def maxpool2x2(x: Tensor, out: Tensor | None = None) -> Tensor:
    y = to_nhwc(F.max_pool2d(to_nchw(x), 2))
    return _write(y, out)


def head(x: Tensor | InputView, weight: Tensor, bias: Tensor | None = None, op: HeadOp = "softmax",
         out: Tensor | None = None) -> Tensor:  # fmt: skip
    """1x1 conv to K classes + a per-pixel op. softmax/sigmoid/logits -> [N, H, W, K] (out's dtype);
    argmax -> [N, H, W] integer class map (first maximum on ties, like torch.argmax)."""
    if op not in HEAD_OPS:
        raise ValueError(f"unknown head op {op!r}; expected one of {HEAD_OPS}")
    view = as_view(x)
    ct = _compute_dtype(view.tensor)
    xs = read_view(view, ct)
    w = weight.reshape(weight.shape[0], -1).to(ct)
    logits = xs @ w.t()
    if bias is not None:
        logits = logits + bias.to(ct)
    if op == "argmax":
        y = logits.argmax(dim=3)
        return _write(y.to(out.dtype if out is not None else torch.int64), out)
    if op == "softmax":
        logits = torch.softmax(logits, dim=3)
    elif op == "sigmoid":
        logits = torch.sigmoid(logits)
    return _write(logits.to(out.dtype if out is not None else view.tensor.dtype), out)


# ---------------------------------------------------------------------------------------------------
# The op signatures every registered kernel's `run` takes (kernels/registry.py; the reference kernels,
# kernels/reference.py, are these functions). pack_* run once at optimize time and return whatever a
# kernel's run takes (here: the weight, cast). exact=True is the registry's: approximate kernels (the cpu
# backend's Winograd) are not chosen.
# ---------------------------------------------------------------------------------------------------

SUPPORTED_DTYPES: tuple[torch.dtype, ...] = FLOAT_DTYPES


def pack_conv_weight(weight: Tensor, dtype: torch.dtype) -> Tensor:
    """OIHW fp32 -> what conv2d takes (the reference keeps OIHW; it computes in fp32 anyway)."""
    return weight.detach().float()


def pack_conv_transpose_weight(weight: Tensor, dtype: torch.dtype) -> Tensor:
    """IOHW [Cin, Cout, 2, 2] -> what conv_transpose2x2 takes."""
    return weight.detach().float()


def pack_head_weight(weight: Tensor, dtype: torch.dtype) -> Tensor:
    """[K, C, 1, 1] or [K, C] -> what head takes."""
    return weight.detach().float().reshape(weight.shape[0], -1)
