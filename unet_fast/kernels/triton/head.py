"""Segmentation head: 1x1 conv to K classes + a per-pixel op in one pass (logits, softmax, sigmoid, or
argmax to an integer class map). All K classes of a pixel live in one tile row (BLOCK_N = next power of
two >= K), so softmax and argmax reduce in registers and the logits are never written."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from unet_fast.kernels import checks
from unet_fast.kernels.spec import HEAD_OPS, InputView
from unet_fast.kernels.spec import head as head_reference  # noqa: F401  (the truth this file implements)
from unet_fast.kernels.triton import common, configs

MAX_CLASSES = 256  # one tile row holds every class; larger heads would need a two-pass softmax

# ------------------------------------------------------------------------------------------------------
# Kernel
# ------------------------------------------------------------------------------------------------------


@triton.jit
def head_kernel(
    x_ptr, C, H, W, s_n, s_h, s_w, RH, RW, off_y, off_x,
    w_ptr, bias_ptr, out_ptr,
    N, VH, VW, K, o_sn, o_sh, o_sw,
    RESAMPLE: tl.constexpr, ALIGN: tl.constexpr, OP: tl.constexpr, HAS_BIAS: tl.constexpr,
    DOT_F32: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """OP is the index into spec.HEAD_OPS: logits, softmax, sigmoid, argmax."""
    pid = tl.program_id(0)
    offs_m = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    n_ok = offs_n < K
    n = offs_m // (VH * VW)
    vy = (offs_m % (VH * VW)) // VW
    vx = offs_m % VW
    m_ok = n < N
    p00, p01, p10, p11, ly, lx, ok = common.view_rows(
        vy, vx, m_ok, off_y, off_x, RH, RW, H, W, s_h, s_w, RESAMPLE, ALIGN
    )
    base = n.to(tl.int64) * s_n
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for c0 in range(0, C, BLOCK_K):
        cs = c0 + offs_k
        c_ok = cs < C
        a = common.load_view_tile(x_ptr, base, p00, p01, p10, p11, ly, lx, ok[:, None] & c_ok[None, :], cs,
                                  RESAMPLE)  # fmt: skip
        b = tl.load(w_ptr + cs[:, None] * K + offs_n[None, :], mask=c_ok[:, None] & n_ok[None, :], other=0.0)
        acc = common.dot_acc(a, b, acc, DOT_F32, PRECISION)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0)[None, :]

    out_row = n.to(tl.int64) * o_sn + vy.to(tl.int64) * o_sh + vx.to(tl.int64) * o_sw
    if OP == 3:
        # argmax: the first class reaching the row maximum (torch.argmax's tie rule)
        logits = tl.where(n_ok[None, :], acc, float("-inf"))
        best = tl.max(logits, axis=1)
        idx = tl.where(logits == best[:, None], offs_n[None, :], BLOCK_N)
        cls = tl.min(idx, axis=1)
        tl.store(out_ptr + out_row, cls.to(out_ptr.dtype.element_ty), mask=m_ok)
    else:
        if OP == 1:
            logits = tl.where(n_ok[None, :], acc, float("-inf"))
            e = tl.exp(logits - tl.max(logits, axis=1)[:, None])  # stable: the largest term is exp(0)
            y = e / tl.sum(e, axis=1)[:, None]
        elif OP == 2:
            y = 1.0 / (1.0 + tl.exp(-acc))
        else:
            y = acc
        tl.store(out_ptr + out_row[:, None] + offs_n[None, :], y.to(out_ptr.dtype.element_ty),
                 mask=m_ok[:, None] & n_ok[None, :])  # fmt: skip


# ------------------------------------------------------------------------------------------------------
# Launcher
# ------------------------------------------------------------------------------------------------------


def pack_weight(weight: Tensor, dtype: torch.dtype) -> Tensor:
    """[K, C] or [K, C, 1, 1] -> [C, K] contiguous in `dtype` (the GEMM's [K, N] operand)."""
    if weight.dim() not in (2, 4) or (weight.dim() == 4 and tuple(weight.shape[2:]) != (1, 1)):
        raise ValueError(f"head weight must be [K, C] or [K, C, 1, 1], got {tuple(weight.shape)}")
    if dtype not in common.SUPPORTED_DTYPES:
        raise ValueError(f"dtype {dtype}; the Triton backend supports {common.SUPPORTED_DTYPES}")
    return weight.detach().reshape(weight.shape[0], -1).t().to(dtype).contiguous()


def block_n(num_classes: int) -> int:
    return max(16, triton.next_power_of_2(num_classes))


_autotuned: dict = {}


def _autotuned_kernel(dtype: torch.dtype, arch: int):
    if (dtype, arch) not in _autotuned:
        _autotuned[(dtype, arch)] = triton.autotune(
            configs=[configs.to_triton(c) for c in configs.head_configs(dtype, arch)], key=["C", "K", "OP"]
        )(head_kernel)
    return _autotuned[(dtype, arch)]


def head(x: Tensor | InputView, packed: Tensor, bias: Tensor | None = None, op: str = "softmax",
         out: Tensor | None = None, *, allow_tf32: bool = False, config: dict | None = None) -> Tensor:  # fmt: skip
    """spec.head with a weight from pack_weight ([C, K]). `config` = {"BLOCK_M", "BLOCK_K", "num_warps",
    "num_stages"} skips autotuning."""
    if not isinstance(packed, Tensor) or packed.dim() != 2:
        raise ValueError(
            f"packed head weight must be [C, K] from pack_head_weight, got {getattr(packed, 'shape', packed)}"
        )
    c, k = packed.shape
    view, out = checks.check_head(x, packed, bias, op, out, num_classes=k)
    if view.channels != c:
        raise ValueError(f"input has {view.channels} channels but the head weight expects {c}")
    if k > MAX_CLASSES:
        raise ValueError(f"the Triton head handles at most {MAX_CLASSES} classes, got {k}")
    xt = view.tensor
    common.check_device_dtype(
        {"x": xt, "weight": packed, "bias": bias, "out": out}, dtype_names=["x", "weight"]
    )
    common.check_packed(packed, xt.dtype, "pack_head_weight")
    if bias is not None and bias.dtype != torch.float32:
        bias = bias.float()
    vargs, vmeta = common.view_args(view)
    nb = xt.shape[0]
    vh, vw = view.out_size
    rows = nb * vh * vw
    args = (*vargs, packed, bias if bias is not None else packed, out, nb, vh, vw, k, *out.stride()[:3])
    meta = dict(**vmeta, OP=HEAD_OPS.index(op), HAS_BIAS=bias is not None, BLOCK_N=block_n(k),
                **common.dot_flags(xt.dtype, allow_tf32))  # fmt: skip
    if config is None and common.interpreting():
        config = configs.interpreter_config("head")
    if config is not None:
        blocks, launch = configs.split(config)
        head_kernel[(triton.cdiv(rows, blocks["BLOCK_M"]),)](*args, **meta, **blocks, **launch)
    else:
        _autotuned_kernel(xt.dtype, common.device_arch(xt))[lambda m: (triton.cdiv(rows, m["BLOCK_M"]),)](
            *args, **meta
        )
    return out
