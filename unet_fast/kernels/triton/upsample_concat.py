"""Standalone upsample + concat: materialise each view (resample, window) into its channel range of
the output, one launch per input. Used only where the read could not be fused into the consumer."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from torch import Tensor

from unet_fast.kernels import checks
from unet_fast.kernels.spec import InputView
from unet_fast.kernels.spec import upsample_concat as upsample_concat_reference  # noqa: F401
from unet_fast.kernels.triton import common, configs

# ------------------------------------------------------------------------------------------------------
# Kernel
# ------------------------------------------------------------------------------------------------------


@triton.jit
def read_view_kernel(
    x_ptr, C, H, W, s_n, s_h, s_w, RH, RW, off_y, off_x,
    out_ptr, N, VH, VW, o_sn, o_sh, o_sw,
    RESAMPLE: tl.constexpr, ALIGN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """out[n, y, x, c] = view[n, y, x, c] for a [pixels, channels] tile (zero outside the source)."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    n = offs_m // (VH * VW)
    vy = (offs_m % (VH * VW)) // VW
    vx = offs_m % VW
    m_ok = n < N
    c_ok = cs < C
    p00, p01, p10, p11, ly, lx, ok = common.view_rows(
        vy, vx, m_ok, off_y, off_x, RH, RW, H, W, s_h, s_w, RESAMPLE, ALIGN
    )
    base = n.to(tl.int64) * s_n
    y = common.load_view_tile(x_ptr, base, p00, p01, p10, p11, ly, lx, ok[:, None] & c_ok[None, :], cs,
                              RESAMPLE)  # fmt: skip
    dst = out_ptr + (n.to(tl.int64) * o_sn + vy.to(tl.int64) * o_sh + vx.to(tl.int64) * o_sw)[:, None]
    tl.store(dst + cs[None, :], y.to(out_ptr.dtype.element_ty), mask=m_ok[:, None] & c_ok[None, :])


# ------------------------------------------------------------------------------------------------------
# Launcher
# ------------------------------------------------------------------------------------------------------

_autotuned: dict = {}


def _autotuned_kernel(dtype: torch.dtype, arch: int):
    if (dtype, arch) not in _autotuned:
        cfgs = [configs.to_triton(c) for c in configs.elementwise_configs(dtype, arch)]
        _autotuned[(dtype, arch)] = triton.autotune(configs=cfgs, key=["C", "RESAMPLE"])(read_view_kernel)
    return _autotuned[(dtype, arch)]


def upsample_concat(inputs: Sequence[Tensor | InputView], out: Tensor | None = None, *,
                    config: dict | None = None) -> Tensor:  # fmt: skip
    """spec.upsample_concat: views side by side along channels into `out` (which may be a slot)."""
    if isinstance(inputs, (Tensor, InputView)):
        inputs = [inputs]
    views, out = checks.check_upsample_concat(inputs, out)
    named = {f"inputs[{i}]": v.tensor for i, v in enumerate(views)} | {"out": out}
    common.check_device_dtype(named, dtype_names=list(named))
    nb = views[0].tensor.shape[0]
    vh, vw = views[0].out_size
    rows = nb * vh * vw
    if config is None and common.interpreting():
        config = configs.interpreter_config("upsample_concat")
    c0 = 0
    for v in views:
        vargs, vmeta = common.view_args(v)
        dst = out[..., c0 : c0 + v.channels]
        c0 += v.channels
        args = (*vargs, dst, nb, vh, vw, *dst.stride()[:3])
        if config is not None:
            blocks, launch = configs.split(config)
            grid = (triton.cdiv(rows, blocks["BLOCK_M"]), triton.cdiv(v.channels, blocks["BLOCK_C"]))
            read_view_kernel[grid](*args, **vmeta, **blocks, **launch)
        else:
            c = v.channels
            _autotuned_kernel(out.dtype, common.device_arch(out))[
                lambda m, c=c: (triton.cdiv(rows, m["BLOCK_M"]), triton.cdiv(c, m["BLOCK_C"]))
            ](*args, **vmeta)
    return out
