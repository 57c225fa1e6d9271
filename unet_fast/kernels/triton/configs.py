"""Tuning configs: a small set per kernel, dtype and arch (no GPU was available to tune them; they are
sized so every one compiles for sm_80 and sm_90 without register spills, which aot.py checks).

A config is a plain dict {BLOCK_*: int, "num_warps": int, "num_stages": int}. On a GPU the launchers
autotune over the list; tests and the interpreter pass one config explicitly (`config=`), because
`@triton.autotune` cannot run without a GPU and the interpreter's cost grows with the number of programs.
"""

from __future__ import annotations

import torch
import triton

OPS = ("conv2d", "conv_transpose2x2", "head", "maxpool2x2", "upsample_concat")


def _cfg(num_warps: int, num_stages: int, **blocks: int) -> dict:
    return {**blocks, "num_warps": num_warps, "num_stages": num_stages}


def conv2d_configs(dtype: torch.dtype, arch: int) -> list[dict]:
    """Implicit-GEMM tiles. fp16/bf16: tensor-core tiles with BLOCK_K 32 (two mma k-steps), a 64-row
    tile for small layers and a 128-row tile with 8 warps for big ones; one more pipeline stage on sm_90,
    whose shared memory (227 KiB) is larger than sm_80's (163 KiB). fp32 (no tensor cores unless tf32)
    keeps BLOCK_K 16: fp32 operands double registers and shared memory per element."""
    if dtype == torch.float32:
        # A 128x64x16 fp32 tile with 8 warps spilled (ptxas held it to 128 registers): one 64-row tile, with
        # 8 warps (half the accumulators per thread): with 4 warps Triton 3.6 (the GPU machine's, torch
        # 2.11's pin) spilled 16 bytes on sm_80, where 3.9 did not (.ci/run compiles with both).
        return [_cfg(8, 2, BLOCK_M=64, BLOCK_N=64, BLOCK_K=16)]
    stages = 4 if arch >= 90 else 3
    return [
        _cfg(4, stages, BLOCK_M=64, BLOCK_N=64, BLOCK_K=32),
        _cfg(8, 3, BLOCK_M=128, BLOCK_N=64, BLOCK_K=32),
    ]


def conv_transpose2x2_configs(dtype: torch.dtype, arch: int) -> list[dict]:
    """A plain GEMM [pixels, Cin] x [Cin, 4 * Cout] whose columns are (dy, dx, cout)."""
    if dtype == torch.float32:
        return [_cfg(4, 2, BLOCK_M=64, BLOCK_N=64, BLOCK_K=16)]
    stages = 4 if arch >= 90 else 3
    return [
        _cfg(4, stages, BLOCK_M=64, BLOCK_N=64, BLOCK_K=32),
        _cfg(8, 3, BLOCK_M=128, BLOCK_N=128, BLOCK_K=32),
    ]


def head_configs(dtype: torch.dtype, arch: int) -> list[dict]:
    """BLOCK_N is fixed per call (all classes in one tile, next power of two >= 16), so only rows and the
    reduction step are tuned; the head is one small layer, so one config per dtype."""
    if dtype == torch.float32:
        return [_cfg(4, 2, BLOCK_M=64, BLOCK_K=32)]
    return [_cfg(4, 3, BLOCK_M=64, BLOCK_K=64)]


def elementwise_configs(dtype: torch.dtype, arch: int) -> list[dict]:
    """maxpool2x2 and upsample_concat: memory-bound copies of [pixels, channels] tiles; 64 channels of
    16-bit data = one 128-byte line per pixel, the unit a warp's loads coalesce into."""
    return [_cfg(4, 1, BLOCK_M=32, BLOCK_C=64)]


CONFIGS = {
    "conv2d": conv2d_configs,
    "conv_transpose2x2": conv_transpose2x2_configs,
    "head": head_configs,
    "maxpool2x2": elementwise_configs,
    "upsample_concat": elementwise_configs,
}

# Interpreter defaults: few, large programs (the interpreter's cost is per program, not per element).
_INTERPRETER = {
    "conv2d": _cfg(4, 1, BLOCK_M=1024, BLOCK_N=64, BLOCK_K=32),
    "conv_transpose2x2": _cfg(4, 1, BLOCK_M=256, BLOCK_N=64, BLOCK_K=32),
    "head": _cfg(4, 1, BLOCK_M=256, BLOCK_K=32),
    "maxpool2x2": _cfg(4, 1, BLOCK_M=256, BLOCK_C=64),
    "upsample_concat": _cfg(4, 1, BLOCK_M=256, BLOCK_C=64),
}


def configs_for(op: str, dtype: torch.dtype, arch: int) -> list[dict]:
    return CONFIGS[op](dtype, arch)


def interpreter_config(op: str) -> dict:
    return dict(_INTERPRETER[op])


def split(config: dict) -> tuple[dict, dict]:
    """(block constexprs, launch options) of a config dict."""
    launch = {k: config[k] for k in ("num_warps", "num_stages") if k in config}
    return {k: v for k, v in config.items() if k not in ("num_warps", "num_stages")}, launch


def to_triton(config: dict) -> triton.Config:
    blocks, launch = split(config)
    return triton.Config(blocks, **launch)
