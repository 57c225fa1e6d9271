"""Standalone 2x2 / stride-2 max-pool over NHWC (where the pool could not be fused into a conv's
epilogue). Odd sizes floor like F.max_pool2d: the last row / column is dropped."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from unet_fast.kernels import checks
from unet_fast.kernels.spec import maxpool2x2 as maxpool2x2_reference  # noqa: F401
from unet_fast.kernels.triton import common, configs

# ------------------------------------------------------------------------------------------------------
# Kernel
# ------------------------------------------------------------------------------------------------------


@triton.jit
def maxpool2x2_kernel(
    x_ptr, out_ptr, N, HO, WO, C, s_n, s_h, s_w, o_sn, o_sh, o_sw,
    BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Tiles of [pooled pixels, channels]; the four taps are always inside the input (floor)."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    n = offs_m // (HO * WO)
    py = (offs_m % (HO * WO)) // WO
    px = offs_m % WO
    mask = (n < N)[:, None] & (cs < C)[None, :]
    src = x_ptr + (n.to(tl.int64) * s_n + (2 * py).to(tl.int64) * s_h + (2 * px).to(tl.int64) * s_w)[:, None]
    src += cs[None, :]
    # Compared in fp32 (exact for every input dtype): the interpreter compares raw bf16 bits otherwise.
    v00 = tl.load(src, mask=mask).to(tl.float32)
    v01 = tl.load(src + s_w, mask=mask).to(tl.float32)
    v10 = tl.load(src + s_h, mask=mask).to(tl.float32)
    v11 = tl.load(src + s_h + s_w, mask=mask).to(tl.float32)
    y = tl.maximum(tl.maximum(v00, v01), tl.maximum(v10, v11))
    dst = out_ptr + (n.to(tl.int64) * o_sn + py.to(tl.int64) * o_sh + px.to(tl.int64) * o_sw)[:, None]
    tl.store(dst + cs[None, :], y.to(out_ptr.dtype.element_ty), mask=mask)


# ------------------------------------------------------------------------------------------------------
# Launcher
# ------------------------------------------------------------------------------------------------------

_autotuned: dict = {}


def _autotuned_kernel(dtype: torch.dtype, arch: int):
    if (dtype, arch) not in _autotuned:
        cfgs = [configs.to_triton(c) for c in configs.elementwise_configs(dtype, arch)]
        _autotuned[(dtype, arch)] = triton.autotune(configs=cfgs, key=["C"])(maxpool2x2_kernel)
    return _autotuned[(dtype, arch)]


def maxpool2x2(x: Tensor, out: Tensor | None = None, *, config: dict | None = None) -> Tensor:
    """spec.maxpool2x2; `out` may be a channel slot of a bigger NHWC buffer."""
    out = checks.check_maxpool2x2(x, out)
    common.check_device_dtype({"x": x, "out": out}, dtype_names=["x", "out"])
    n, h, w, c = x.shape
    ho, wo = h // 2, w // 2
    rows = n * ho * wo
    args = (x, out, n, ho, wo, c, *x.stride()[:3], *out.stride()[:3])
    if config is None and common.interpreting():
        config = configs.interpreter_config("maxpool2x2")
    if config is not None:
        blocks, launch = configs.split(config)
        grid = (triton.cdiv(rows, blocks["BLOCK_M"]), triton.cdiv(c, blocks["BLOCK_C"]))
        maxpool2x2_kernel[grid](*args, **blocks, **launch)
    else:
        _autotuned_kernel(x.dtype, common.device_arch(x))[
            lambda m: (triton.cdiv(rows, m["BLOCK_M"]), triton.cdiv(c, m["BLOCK_C"]))
        ](*args)
    return out
