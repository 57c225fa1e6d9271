"""Micro-benchmarks: each fused C++ CPU op (unet_fast.kernels.cpu) against the PyTorch op sequence it
replaces, side by side in one run, on U-Net-sized stages (fp32, NHWC / channels_last for both sides).

    python -m pytest benchmarks/kernels/bench_cpu_ops.py --benchmark-only \
        --benchmark-group-by=group --benchmark-columns=median,min,max,rounds

Each pair shares a `group`; the ratio torch median / fused median is the speed-up (> 1: fused is faster).
The fused side runs the best CPU kernel variant this machine has; `UNET_FAST_KERNELS=cpu=avx2` (or any name in
`unet_fast.kernels.cpu_isa.available_isas()`) forces one, e.g. to compare AVX2 and AVX-512 in separate runs.
On a shared machine add `--bench-threads 1 --benchmark-timer time.process_time` (CPU time, one thread).
Threads: both sides use torch.get_num_threads() (benchmarks/conftest.py sets it, --bench-threads N).
Every case first checks the fused result against the PyTorch sequence (spec.TOLERANCES for fp32) and
records the max abs error in extra_info: a fast wrong answer fails. Inputs are fresh random tensors.
The PyTorch side gets its best layout (channels_last) and does not copy its result into a concat slot,
which the fused side does: the comparison favours PyTorch.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from unet_fast.kernels import cpu
from unet_fast.kernels.spec import TOLERANCES, InputView, Resample

F32 = torch.float32
ROUNDS, WARMUP = 15, 3


def cl(x: Tensor) -> Tensor:
    """NHWC memory seen as a channels_last NCHW tensor (no copy)."""
    return x.permute(0, 3, 1, 2)


def nhwc(x: Tensor) -> Tensor:
    return x.permute(0, 2, 3, 1)


def run_pair(benchmark, side: str, fused, reference) -> None:
    """Check parity once, then time `fused` or `reference` (pytest-benchmark pedantic mode)."""
    got, ref = fused(), reference()
    got, ref = (got if isinstance(got, tuple) else (got,)), (ref if isinstance(ref, tuple) else (ref,))
    err = 0.0
    for g, r in zip(got, ref, strict=True):
        if g.is_floating_point():
            atol, rtol = TOLERANCES[F32]
            torch.testing.assert_close(g, r.reshape(g.shape), atol=atol, rtol=rtol)
            err = max(err, float((g - r.reshape(g.shape)).abs().max()))
        else:
            assert torch.equal(g, r.reshape(g.shape).to(g.dtype))
    benchmark.extra_info.update(threads=torch.get_num_threads(), max_abs_err=err)
    benchmark.pedantic(fused if side == "fused" else reference, rounds=ROUNDS, warmup_rounds=WARMUP)


SIDES = ["fused", "torch"]


# --- upsample + concat: interpolate + cat -------------------------------------------------------------


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("mode,ac", [("nearest", False), ("bilinear", True)])
def test_upsample_concat(benchmark, side: str, mode: str, ac: bool) -> None:
    benchmark.group = f"upsample_concat {mode} ac={ac}: [1,64,64,128] x2 ++ skip [1,128,128,64]"
    deep, skip = torch.randn(1, 64, 64, 128), torch.randn(1, 128, 128, 64)
    out = torch.empty(1, 128, 128, 192)
    views = [InputView(skip), InputView(deep, Resample(mode, (128, 128), ac))]
    kw = {"align_corners": ac} if mode == "bilinear" else {}

    def fused() -> Tensor:
        return cpu.upsample_concat(views, out=out)

    def reference() -> Tensor:
        return nhwc(torch.cat([cl(skip), F.interpolate(cl(deep), size=(128, 128), mode=mode, **kw)], 1))

    run_pair(benchmark, side, fused, reference)


# --- conv2d: conv + bias + relu + max_pool (encoder) and interpolate + cat + conv + relu (decoder) -------


@pytest.mark.parametrize("side", SIDES)
def test_conv2d_relu_pool(benchmark, side: str) -> None:
    benchmark.group = "conv2d 3x3 + bias + relu + pool: [1,128,128,32] -> 32"
    x, w, b = torch.randn(1, 128, 128, 32), torch.randn(32, 32, 3, 3) / 17, torch.randn(32)
    packed = cpu.pack_conv_weight(w, F32)
    out, pool = torch.empty(1, 128, 128, 32), torch.empty(1, 64, 64, 32)

    def fused() -> tuple[Tensor, Tensor]:
        cpu.conv2d([x], packed, b, padding=1, act="relu", out=out, pool_out=pool)
        return out, pool

    def reference() -> tuple[Tensor, Tensor]:
        y = torch.relu_(F.conv2d(cl(x), w, b, padding=1))
        return nhwc(y), nhwc(F.max_pool2d(y, 2))

    run_pair(benchmark, side, fused, reference)


@pytest.mark.parametrize("side", SIDES)
def test_conv2d_decoder_upsample_concat(benchmark, side: str) -> None:
    benchmark.group = "conv2d decoder: cat(skip, bilinear x2) -> 3x3 + bias + relu: [1,128,128,32+32] -> 32"
    deep, skip = torch.randn(1, 64, 64, 32), torch.randn(1, 128, 128, 32)
    w, b = torch.randn(32, 64, 3, 3) / 24, torch.randn(32)
    packed = cpu.pack_conv_weight(w, F32)
    views = [InputView(skip), InputView(deep, Resample("bilinear", (128, 128), True))]
    out = torch.empty(1, 128, 128, 32)

    def fused() -> Tensor:
        return cpu.conv2d(views, packed, b, padding=1, act="relu", out=out)

    def reference() -> Tensor:
        up = F.interpolate(cl(deep), size=(128, 128), mode="bilinear", align_corners=True)
        return nhwc(torch.relu_(F.conv2d(torch.cat([cl(skip), up], 1), w, b, padding=1)))

    run_pair(benchmark, side, fused, reference)


# --- head: 1x1 conv + softmax / argmax ---------------------------------------------------------------


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("op", ["softmax", "argmax"])
def test_head(benchmark, side: str, op: str) -> None:
    benchmark.group = f"head 1x1 + {op}: [1,256,256,64] -> 2 classes"
    x, w, b = torch.randn(1, 256, 256, 64), torch.randn(2, 64, 1, 1), torch.randn(2)
    packed = cpu.pack_head_weight(w, F32)
    out = torch.empty(1, 256, 256, 2) if op == "softmax" else torch.empty(1, 256, 256, dtype=torch.int64)

    def fused() -> Tensor:
        return cpu.head(x, packed, b, op, out=out)

    def reference() -> Tensor:
        logits = F.conv2d(cl(x), w, b)
        return nhwc(torch.softmax(logits, 1)) if op == "softmax" else logits.argmax(1)

    run_pair(benchmark, side, fused, reference)


# --- maxpool2x2 and conv_transpose2x2 ------------------------------------------------------------------


@pytest.mark.parametrize("side", SIDES)
def test_maxpool2x2(benchmark, side: str) -> None:
    benchmark.group = "maxpool2x2: [1,256,256,64]"
    x = torch.randn(1, 256, 256, 64)
    out = torch.empty(1, 128, 128, 64)

    def fused() -> Tensor:
        return cpu.maxpool2x2(x, out=out)

    def reference() -> Tensor:
        return nhwc(F.max_pool2d(cl(x), 2))

    run_pair(benchmark, side, fused, reference)


@pytest.mark.parametrize("side", SIDES)
def test_conv_transpose2x2_into_slot(benchmark, side: str) -> None:
    benchmark.group = "conv_transpose2x2 + bias into a concat slot: [1,64,64,128] -> 64, ++ skip 64"
    x, w, b = torch.randn(1, 64, 64, 128), torch.randn(128, 64, 2, 2) / 11, torch.randn(64)
    skip = torch.randn(1, 128, 128, 64)
    packed = cpu.pack_conv_transpose_weight(w, F32)
    buf = torch.empty(1, 128, 128, 128)
    buf[..., :64] = skip  # the skip is already in its slot (its producer wrote it there)

    def fused() -> Tensor:
        cpu.conv_transpose2x2(x, packed, b, out=buf[..., 64:])
        return buf

    def reference() -> Tensor:
        return nhwc(torch.cat([cl(skip), F.conv_transpose2d(cl(x), w, b, stride=2)], 1))

    run_pair(benchmark, side, fused, reference)
