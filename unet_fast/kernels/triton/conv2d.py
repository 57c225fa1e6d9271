"""Fused conv2d: implicit GEMM over NHWC views with bias, residual, activation, a slot output and an
optional 2x2 max-pool epilogue.

GEMM shape: rows = output pixels (N * Ho * Wo), columns = Cout, reduction = taps x input channels. The
reduction walks the inputs of a virtual concat in turn (up to MAX_INPUTS views), each read through its
own resample / window, so neither the concatenated nor the upsampled tensor ever exists.
With a pool epilogue, rows are ordered by 2x2 quad (row = 4 * quad + 2 * dy + dx), so a tile holds whole
pooling windows and the pool is a max over groups of four rows; odd edges are written to `out` but
belong to no window, as F.max_pool2d floors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from torch import Tensor

from unet_fast.kernels import checks
from unet_fast.kernels.spec import InputView
from unet_fast.kernels.spec import conv2d as conv2d_reference  # noqa: F401  (the truth this file implements)
from unet_fast.kernels.triton import common, configs

MAX_INPUTS = 4
# Inputs with fewer channels than one tl.dot k-step (16) reduce over flattened (tap, channel) pairs.
FLAT_K_CHANNELS = 16

# ------------------------------------------------------------------------------------------------------
# Kernel
# ------------------------------------------------------------------------------------------------------


@triton.jit
def _accumulate_view(acc, x_ptr, C, H, W, s_n, s_h, s_w, RH, RW, off_y, off_x, c_base, w_ptr, CIN, COUT,
                     n, oh, ow, m_ok, offs_n, n_ok, VH, VW, SH, SW, PH, PW, DH, DW,
                     KH: tl.constexpr, KW: tl.constexpr, RESAMPLE: tl.constexpr, ALIGN: tl.constexpr,
                     BLOCK_K: tl.constexpr, DOT_F32: tl.constexpr, PRECISION: tl.constexpr):  # fmt: skip
    """acc += this view's share of the reduction: for each tap, its channels in BLOCK_K steps against
    weight rows (tap * CIN + c_base + c) of the packed [KH*KW*CIN, COUT] weight."""
    offs_k = tl.arange(0, BLOCK_K)
    base = n.to(tl.int64) * s_n
    for kh in range(KH):
        for kw in range(KW):
            vy = oh * SH - PH + kh * DH
            vx = ow * SW - PW + kw * DW
            ok = m_ok & (vy >= 0) & (vy < VH) & (vx >= 0) & (vx < VW)
            p00, p01, p10, p11, ly, lx, ok = common.view_rows(
                vy, vx, ok, off_y, off_x, RH, RW, H, W, s_h, s_w, RESAMPLE, ALIGN
            )
            w_row = (kh * KW + kw) * CIN + c_base
            for c0 in range(0, C, BLOCK_K):
                # common.load_view_tile and common.dot_acc, inlined (nested calls are slow to interpret)
                cs = c0 + offs_k
                c_ok = cs < C
                mask = ok[:, None] & c_ok[None, :]
                if RESAMPLE == 2:
                    x00 = tl.load(x_ptr + (base + p00)[:, None] + cs[None, :], mask=mask, other=0.0)
                    x01 = tl.load(x_ptr + (base + p01)[:, None] + cs[None, :], mask=mask, other=0.0)
                    x10 = tl.load(x_ptr + (base + p10)[:, None] + cs[None, :], mask=mask, other=0.0)
                    x11 = tl.load(x_ptr + (base + p11)[:, None] + cs[None, :], mask=mask, other=0.0)
                    top = (1.0 - lx[:, None]) * x00.to(tl.float32) + lx[:, None] * x01.to(tl.float32)
                    bot = (1.0 - lx[:, None]) * x10.to(tl.float32) + lx[:, None] * x11.to(tl.float32)
                    a = ((1.0 - ly[:, None]) * top + ly[:, None] * bot).to(x_ptr.dtype.element_ty)
                else:
                    a = tl.load(x_ptr + (base + p00)[:, None] + cs[None, :], mask=mask, other=0.0)
                b = tl.load(w_ptr + (w_row + cs).to(tl.int64)[:, None] * COUT + offs_n[None, :],
                            mask=c_ok[:, None] & n_ok[None, :], other=0.0)  # fmt: skip
                if DOT_F32:
                    acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
                else:
                    acc = tl.dot(a, b, acc, input_precision=PRECISION)
    return acc


@triton.jit
def _accumulate_view_flat(acc, x_ptr, C, H, W, s_n, s_h, s_w, RH, RW, off_y, off_x, c_base, w_ptr, CIN,
                          COUT, n, oh, ow, m_ok, offs_n, n_ok, VH, VW, SH, SW, PH, PW, DH, DW,
                          KH: tl.constexpr, KW: tl.constexpr, RESAMPLE: tl.constexpr, ALIGN: tl.constexpr,
                          BLOCK_K: tl.constexpr, DOT_F32: tl.constexpr, PRECISION: tl.constexpr):  # fmt: skip
    """_accumulate_view for inputs with few channels (an RGB stem): the reduction runs over flattened
    (tap, channel) pairs, k = tap * C + c, so a 7x7 conv of 3 channels takes ceil(147 / BLOCK_K) steps
    instead of 49 steps that each use 3 of BLOCK_K lanes. Addresses become per element, not per row."""
    offs_k = tl.arange(0, BLOCK_K)
    base = (n.to(tl.int64) * s_n)[:, None]
    for k0 in range(0, KH * KW * C, BLOCK_K):
        k = k0 + offs_k
        k_ok = k < KH * KW * C
        tap = k // C
        c = k % C
        vy = oh[:, None] * SH - PH + (tap // KW)[None, :] * DH
        vx = ow[:, None] * SW - PW + (tap % KW)[None, :] * DW
        ok = (m_ok[:, None] & k_ok[None, :]) & ((vy >= 0) & (vy < VH) & (vx >= 0) & (vx < VW))
        p00, p01, p10, p11, ly, lx, ok = common.view_rows(
            vy, vx, ok, off_y, off_x, RH, RW, H, W, s_h, s_w, RESAMPLE, ALIGN
        )
        cc = c[None, :]
        if RESAMPLE == 2:
            x00 = tl.load(x_ptr + base + p00 + cc, mask=ok, other=0.0).to(tl.float32)
            x01 = tl.load(x_ptr + base + p01 + cc, mask=ok, other=0.0).to(tl.float32)
            x10 = tl.load(x_ptr + base + p10 + cc, mask=ok, other=0.0).to(tl.float32)
            x11 = tl.load(x_ptr + base + p11 + cc, mask=ok, other=0.0).to(tl.float32)
            top = (1.0 - lx) * x00 + lx * x01
            bot = (1.0 - lx) * x10 + lx * x11
            a = ((1.0 - ly) * top + ly * bot).to(x_ptr.dtype.element_ty)
        else:
            a = tl.load(x_ptr + base + p00 + cc, mask=ok, other=0.0)
        b = tl.load(w_ptr + (tap * CIN + c_base + c).to(tl.int64)[:, None] * COUT + offs_n[None, :],
                    mask=k_ok[:, None] & n_ok[None, :], other=0.0)  # fmt: skip
        if DOT_F32:
            acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
        else:
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
    return acc


@triton.jit
def conv2d_kernel(
    x0_ptr, C0, H0, W0, sn0, sh0, sw0, RH0, RW0, oy0, ox0,
    x1_ptr, C1, H1, W1, sn1, sh1, sw1, RH1, RW1, oy1, ox1,
    x2_ptr, C2, H2, W2, sn2, sh2, sw2, RH2, RW2, oy2, ox2,
    x3_ptr, C3, H3, W3, sn3, sh3, sw3, RH3, RW3, oy3, ox3,
    w_ptr, bias_ptr, res_ptr, out_ptr, pool_ptr,
    N, VH, VW, HO, WO, CIN, COUT,
    SH, SW, PH, PW, DH, DW,
    r_sn, r_sh, r_sw, o_sn, o_sh, o_sw, p_sn, p_sh, p_sw,
    negative_slope,
    KH: tl.constexpr, KW: tl.constexpr, NUM_INPUTS: tl.constexpr,
    RS0: tl.constexpr, AC0: tl.constexpr, RS1: tl.constexpr, AC1: tl.constexpr,
    RS2: tl.constexpr, AC2: tl.constexpr, RS3: tl.constexpr, AC3: tl.constexpr,
    FK0: tl.constexpr, FK1: tl.constexpr, FK2: tl.constexpr, FK3: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, POOL: tl.constexpr, ACT: tl.constexpr,
    DOT_F32: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < COUT
    if POOL:
        qh_n = (HO + 1) // 2
        qw_n = (WO + 1) // 2
        q = offs_m // 4
        r = offs_m % 4
        n = q // (qh_n * qw_n)
        q_hw = q % (qh_n * qw_n)
        oh = 2 * (q_hw // qw_n) + r // 2
        ow = 2 * (q_hw % qw_n) + r % 2
    else:
        n = offs_m // (HO * WO)
        m_hw = offs_m % (HO * WO)
        oh = m_hw // WO
        ow = m_hw % WO
    m_ok = (n < N) & (oh < HO) & (ow < WO)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if FK0:
        acc = _accumulate_view_flat(acc, x0_ptr, C0, H0, W0, sn0, sh0, sw0, RH0, RW0, oy0, ox0, 0, w_ptr, CIN, COUT,
                                    n, oh, ow, m_ok, offs_n, n_ok, VH, VW, SH, SW, PH, PW, DH, DW,
                                    KH, KW, RS0, AC0, BLOCK_K, DOT_F32, PRECISION)  # fmt: skip
    else:
        acc = _accumulate_view(acc, x0_ptr, C0, H0, W0, sn0, sh0, sw0, RH0, RW0, oy0, ox0, 0, w_ptr, CIN, COUT,
                               n, oh, ow, m_ok, offs_n, n_ok, VH, VW, SH, SW, PH, PW, DH, DW,
                               KH, KW, RS0, AC0, BLOCK_K, DOT_F32, PRECISION)  # fmt: skip
    if NUM_INPUTS > 1:
        if FK1:
            acc = _accumulate_view_flat(acc, x1_ptr, C1, H1, W1, sn1, sh1, sw1, RH1, RW1, oy1, ox1, C0, w_ptr, CIN,
                                        COUT, n, oh, ow, m_ok, offs_n, n_ok, VH, VW, SH, SW, PH, PW, DH, DW,
                                        KH, KW, RS1, AC1, BLOCK_K, DOT_F32, PRECISION)  # fmt: skip
        else:
            acc = _accumulate_view(acc, x1_ptr, C1, H1, W1, sn1, sh1, sw1, RH1, RW1, oy1, ox1, C0, w_ptr, CIN,
                                   COUT, n, oh, ow, m_ok, offs_n, n_ok, VH, VW, SH, SW, PH, PW, DH, DW,
                                   KH, KW, RS1, AC1, BLOCK_K, DOT_F32, PRECISION)  # fmt: skip
    if NUM_INPUTS > 2:
        if FK2:
            acc = _accumulate_view_flat(acc, x2_ptr, C2, H2, W2, sn2, sh2, sw2, RH2, RW2, oy2, ox2, C0 + C1, w_ptr,
                                        CIN, COUT, n, oh, ow, m_ok, offs_n, n_ok, VH, VW, SH, SW, PH, PW, DH, DW,
                                        KH, KW, RS2, AC2, BLOCK_K, DOT_F32, PRECISION)  # fmt: skip
        else:
            acc = _accumulate_view(acc, x2_ptr, C2, H2, W2, sn2, sh2, sw2, RH2, RW2, oy2, ox2, C0 + C1, w_ptr,
                                   CIN, COUT, n, oh, ow, m_ok, offs_n, n_ok, VH, VW, SH, SW, PH, PW, DH, DW,
                                   KH, KW, RS2, AC2, BLOCK_K, DOT_F32, PRECISION)  # fmt: skip
    if NUM_INPUTS > 3:
        if FK3:
            acc = _accumulate_view_flat(acc, x3_ptr, C3, H3, W3, sn3, sh3, sw3, RH3, RW3, oy3, ox3, C0 + C1 + C2,
                                        w_ptr, CIN, COUT, n, oh, ow, m_ok, offs_n, n_ok, VH, VW, SH, SW, PH, PW,
                                        DH, DW, KH, KW, RS3, AC3, BLOCK_K, DOT_F32, PRECISION)  # fmt: skip
        else:
            acc = _accumulate_view(acc, x3_ptr, C3, H3, W3, sn3, sh3, sw3, RH3, RW3, oy3, ox3, C0 + C1 + C2,
                                   w_ptr, CIN, COUT, n, oh, ow, m_ok, offs_n, n_ok, VH, VW, SH, SW, PH, PW,
                                   DH, DW, KH, KW, RS3, AC3, BLOCK_K, DOT_F32, PRECISION)  # fmt: skip

    # Epilogue: y = act(acc + bias + residual), stored into the (slot) output.
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0)[None, :]
    mask = m_ok[:, None] & n_ok[None, :]
    n64 = n.to(tl.int64)
    if HAS_RES:
        res_off = n64 * r_sn + oh.to(tl.int64) * r_sh + ow.to(tl.int64) * r_sw
        acc += tl.load(res_ptr + res_off[:, None] + offs_n[None, :], mask=mask, other=0.0).to(tl.float32)
    y = common.apply_act(acc, ACT, negative_slope)
    out_off = n64 * o_sn + oh.to(tl.int64) * o_sh + ow.to(tl.int64) * o_sw
    tl.store(out_ptr + out_off[:, None] + offs_n[None, :], y.to(out_ptr.dtype.element_ty), mask=mask)

    if POOL:
        # Rows outside the image never win the max; a quad is pooled only if it lies wholly inside.
        y = tl.where(mask, y, float("-inf"))
        pooled = tl.max(tl.reshape(y, (BLOCK_M // 4, 4, BLOCK_N)), axis=1)
        offs_q = pid_m * (BLOCK_M // 4) + tl.arange(0, BLOCK_M // 4)
        qn = offs_q // (qh_n * qw_n)
        qh = (offs_q % (qh_n * qw_n)) // qw_n
        qw = offs_q % qw_n
        q_ok = (qn < N) & (qh < HO // 2) & (qw < WO // 2)
        p_off = qn.to(tl.int64) * p_sn + qh.to(tl.int64) * p_sh + qw.to(tl.int64) * p_sw
        tl.store(pool_ptr + p_off[:, None] + offs_n[None, :], pooled.to(pool_ptr.dtype.element_ty),
                 mask=q_ok[:, None] & n_ok[None, :])  # fmt: skip


# ------------------------------------------------------------------------------------------------------
# Launcher
# ------------------------------------------------------------------------------------------------------


def pack_weight(w_oihw: Tensor, dtype: torch.dtype) -> Tensor:
    """OIHW -> [KH, KW, Cin, Cout] contiguous in `dtype`: the GEMM's [K, N] operand with Cout contiguous
    (coalesced weight loads), reduction rows ordered tap-major like the kernel's loops."""
    if w_oihw.dim() != 4:
        raise ValueError(f"conv weight must be OIHW [Cout, Cin, kH, kW], got shape {tuple(w_oihw.shape)}")
    if dtype not in common.SUPPORTED_DTYPES:
        raise ValueError(f"dtype {dtype}; the Triton backend supports {common.SUPPORTED_DTYPES}")
    return w_oihw.detach().to(dtype).permute(2, 3, 1, 0).contiguous()


def packed_oihw_shape(packed: Tensor) -> tuple[int, int, int, int]:
    if not isinstance(packed, Tensor) or packed.dim() != 4:
        raise ValueError(
            "packed conv weight must be a [KH, KW, Cin, Cout] tensor from pack_conv_weight, got "
            f"{tuple(packed.shape) if isinstance(packed, Tensor) else type(packed).__name__}"
        )
    kh, kw, cin, cout = packed.shape
    return cout, cin, kh, kw


_autotuned: dict = {}


def _autotuned_kernel(dtype: torch.dtype, arch: int):
    key = (dtype, arch)
    if key not in _autotuned:
        _autotuned[key] = triton.autotune(
            configs=[configs.to_triton(c) for c in configs.conv2d_configs(dtype, arch)],
            key=["CIN", "COUT", "HO", "WO", "N", "KH", "KW", "POOL"],
        )(conv2d_kernel)
    return _autotuned[key]


def conv2d(inputs: Sequence[Tensor | InputView], packed_weight: Tensor, bias: Tensor | None = None, *,
           stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
           dilation: int | Sequence[int] = 1, act: str = "none", negative_slope: float = 0.01,
           residual: Tensor | None = None, out: Tensor | None = None, pool_out: Tensor | None = None,
           allow_tf32: bool = False, config: dict | None = None) -> Tensor:  # fmt: skip
    """spec.conv2d with a weight from pack_weight. `config` = {"BLOCK_M", "BLOCK_N", "BLOCK_K",
    "num_warps", "num_stages"} skips autotuning (tests, the interpreter)."""
    if isinstance(inputs, (Tensor, InputView)):
        inputs = [inputs]
    g = checks.check_conv2d(inputs, packed_weight, bias, stride=stride, padding=padding, dilation=dilation,
                            act=act, residual=residual, out=out, pool_out=pool_out,
                            weight_shape=packed_oihw_shape(packed_weight))  # fmt: skip
    x0 = g.views[0].tensor
    named = {f"inputs[{i}]": v.tensor for i, v in enumerate(g.views)}
    named |= {
        "weight": packed_weight,
        "bias": bias,
        "residual": residual,
        "out": g.out,
        "pool_out": g.pool_out,
    }
    common.check_device_dtype(named, dtype_names=list(named))
    common.check_packed(packed_weight, x0.dtype, "pack_conv_weight")
    if len(g.views) > MAX_INPUTS:
        raise ValueError(
            f"the Triton conv reads at most {MAX_INPUTS} inputs (a virtual concat), got {len(g.views)}"
        )

    view_args, view_meta = [], {}
    for i in range(MAX_INPUTS):
        args, meta = common.view_args(g.views[min(i, len(g.views) - 1)])
        view_args += args
        view_meta |= {
            f"RS{i}": meta["RESAMPLE"],
            f"AC{i}": meta["ALIGN"],
            f"FK{i}": args[1] < FLAT_K_CHANNELS,
        }
    out_t, pool_t, res_t = g.out, g.pool_out, g.residual
    if res_t is not None and res_t.untyped_storage().data_ptr() == out_t.untyped_storage().data_ptr():
        # In place (out = act(conv + out)) is one read-then-write per element, but the autotuner runs the
        # kernel several times: each run would add the residual again. Read a copy instead (any residual
        # in the output's buffer is copied; a disjoint slot costs a copy, never a wrong answer).
        res_t = res_t.clone()
    if bias is not None and bias.dtype != torch.float32:
        bias = bias.float()
    n = g.batch
    ho, wo = g.out_size
    rows = n * ((ho + 1) // 2) * ((wo + 1) // 2) * 4 if pool_t is not None else n * ho * wo
    dummy = out_t
    res_s = res_t.stride()[:3] if res_t is not None else (0, 0, 0)
    pool_s = pool_t.stride()[:3] if pool_t is not None else (0, 0, 0)
    args = (*view_args, packed_weight, bias if bias is not None else dummy,
            res_t if res_t is not None else dummy, out_t, pool_t if pool_t is not None else dummy,
            n, g.in_size[0], g.in_size[1], ho, wo, g.in_channels, g.out_channels,
            *g.stride, *g.padding, *g.dilation, *res_s, *out_t.stride()[:3], *pool_s,
            float(negative_slope))  # fmt: skip
    meta = dict(KH=g.kernel[0], KW=g.kernel[1], NUM_INPUTS=len(g.views), **view_meta,
                HAS_BIAS=bias is not None, HAS_RES=res_t is not None, POOL=pool_t is not None,
                ACT=g.act_index, **common.dot_flags(x0.dtype, allow_tf32))  # fmt: skip

    if config is None and common.interpreting():
        config = configs.interpreter_config("conv2d")
    if config is not None:
        blocks, launch = configs.split(config)

        def grid(_):
            return (triton.cdiv(rows, blocks["BLOCK_M"]), triton.cdiv(g.out_channels, blocks["BLOCK_N"]))

        conv2d_kernel[grid](*args, **meta, **blocks, **launch)
    else:
        kernel = _autotuned_kernel(x0.dtype, common.device_arch(x0))

        def grid(m):
            return (triton.cdiv(rows, m["BLOCK_M"]), triton.cdiv(g.out_channels, m["BLOCK_N"]))

        kernel[grid](*args, **meta)
    return out_t


__all__ = ["conv2d", "conv2d_kernel", "pack_weight", "packed_oihw_shape"]
