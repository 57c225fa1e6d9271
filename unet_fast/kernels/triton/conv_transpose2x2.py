"""ConvTranspose2d(kernel 2, stride 2) as one GEMM: [pixels, Cin] x [Cin, 4 * Cout], columns ordered
(dy, dx, cout). Each output pixel receives exactly one tap, so the epilogue (bias, activation) scatters
every column straight to pixel (2i + dy, 2j + dx) of its channel slot: no overlap, no atomics."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from unet_fast.kernels import checks
from unet_fast.kernels.spec import ACTIVATIONS
from unet_fast.kernels.spec import conv_transpose2x2 as conv_transpose2x2_reference  # noqa: F401
from unet_fast.kernels.triton import common, configs

# ------------------------------------------------------------------------------------------------------
# Kernel
# ------------------------------------------------------------------------------------------------------


@triton.jit
def conv_transpose2x2_kernel(
    x_ptr, w_ptr, bias_ptr, out_ptr,
    N, H, W, CIN, COUT, s_n, s_h, s_w, o_sn, o_sh, o_sw, negative_slope,
    HAS_BIAS: tl.constexpr, ACT: tl.constexpr, DOT_F32: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    n = offs_m // (H * W)
    i = (offs_m % (H * W)) // W
    j = offs_m % W
    m_ok = n < N
    n_ok = offs_n < 4 * COUT
    x_row = n.to(tl.int64) * s_n + i.to(tl.int64) * s_h + j.to(tl.int64) * s_w
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for c0 in range(0, CIN, BLOCK_K):
        cs = c0 + offs_k
        c_ok = cs < CIN
        a = tl.load(x_ptr + x_row[:, None] + cs[None, :], mask=m_ok[:, None] & c_ok[None, :], other=0.0)
        b = tl.load(w_ptr + cs.to(tl.int64)[:, None] * (4 * COUT) + offs_n[None, :],
                    mask=c_ok[:, None] & n_ok[None, :], other=0.0)  # fmt: skip
        if DOT_F32:
            acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
        else:
            acc = tl.dot(a, b, acc, input_precision=PRECISION)

    tap = offs_n // COUT
    co = offs_n % COUT
    if HAS_BIAS:
        acc += tl.load(bias_ptr + co, mask=n_ok, other=0.0)[None, :]
    y = common.apply_act(acc, ACT, negative_slope)
    oy = 2 * i[:, None] + (tap // 2)[None, :]
    ox = 2 * j[:, None] + (tap % 2)[None, :]
    out_off = n.to(tl.int64)[:, None] * o_sn + oy.to(tl.int64) * o_sh + ox.to(tl.int64) * o_sw + co[None, :]
    tl.store(out_ptr + out_off, y.to(out_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


# ------------------------------------------------------------------------------------------------------
# Launcher
# ------------------------------------------------------------------------------------------------------


def pack_weight(w_iohw: Tensor, dtype: torch.dtype) -> Tensor:
    """IOHW [Cin, Cout, 2, 2] -> [Cin, 2, 2, Cout] contiguous in `dtype`: the GEMM's [Cin, 4 * Cout]
    operand with columns (dy, dx, cout)."""
    if w_iohw.dim() != 4 or tuple(w_iohw.shape[2:]) != (2, 2):
        raise ValueError(f"transposed conv weight must be IOHW [Cin, Cout, 2, 2], got {tuple(w_iohw.shape)}")
    if dtype not in common.SUPPORTED_DTYPES:
        raise ValueError(f"dtype {dtype}; the Triton backend supports {common.SUPPORTED_DTYPES}")
    return w_iohw.detach().to(dtype).permute(0, 2, 3, 1).contiguous()


_autotuned: dict = {}


def _autotuned_kernel(dtype: torch.dtype, arch: int):
    if (dtype, arch) not in _autotuned:
        cfgs = [configs.to_triton(c) for c in configs.conv_transpose2x2_configs(dtype, arch)]
        _autotuned[(dtype, arch)] = triton.autotune(configs=cfgs, key=["CIN", "COUT", "H", "W", "N"])(
            conv_transpose2x2_kernel
        )
    return _autotuned[(dtype, arch)]


def conv_transpose2x2(x: Tensor, packed: Tensor, bias: Tensor | None = None, *, act: str = "none",
                      negative_slope: float = 0.01, out: Tensor | None = None, allow_tf32: bool = False,
                      config: dict | None = None) -> Tensor:  # fmt: skip
    """spec.conv_transpose2x2 with a weight from pack_weight; `out` may be a channel slot."""
    if not isinstance(packed, Tensor) or packed.dim() != 4 or tuple(packed.shape[1:3]) != (2, 2):
        raise ValueError(
            "packed transposed-conv weight must be [Cin, 2, 2, Cout] from pack_conv_transpose_weight, "
            f"got {tuple(getattr(packed, 'shape', ()))}"
        )
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; expected one of {ACTIVATIONS}")
    cin, _, _, cout = packed.shape
    out = checks.check_conv_transpose2x2(x, packed, bias, out, weight_shape=(cin, cout, 2, 2))
    common.check_device_dtype(
        {"x": x, "weight": packed, "bias": bias, "out": out}, dtype_names=["x", "weight", "out"]
    )
    common.check_packed(packed, x.dtype, "pack_conv_transpose_weight")
    if bias is not None and bias.dtype != torch.float32:
        bias = bias.float()
    n, h, w, _ = x.shape
    rows = n * h * w
    args = (x, packed, bias if bias is not None else packed, out, n, h, w, cin, cout, *x.stride()[:3],
            *out.stride()[:3], float(negative_slope))  # fmt: skip
    meta = dict(
        HAS_BIAS=bias is not None, ACT=ACTIVATIONS.index(act), **common.dot_flags(x.dtype, allow_tf32)
    )
    if config is None and common.interpreting():
        config = configs.interpreter_config("conv_transpose2x2")
    if config is not None:
        blocks, launch = configs.split(config)
        grid = (triton.cdiv(rows, blocks["BLOCK_M"]), triton.cdiv(4 * cout, blocks["BLOCK_N"]))
        conv_transpose2x2_kernel[grid](*args, **meta, **blocks, **launch)
    else:
        _autotuned_kernel(x.dtype, common.device_arch(x))[
            lambda m: (triton.cdiv(rows, m["BLOCK_M"]), triton.cdiv(4 * cout, m["BLOCK_N"]))
        ](*args, **meta)
    return out
