"""Cases and helpers shared by the CUDA kernel tests: the GPU tests (test_cuda_ops.py) and the host-side
harness that runs the kernels' index math with g++ (test_cuda_host_harness.py) walk the same cases, those of
tests/kernels/conv_cases.py (the registry conformance suite walks them too) plus the cp.async ones here."""

from __future__ import annotations

import kernel_testutil as ku
from conv_cases import (
    BATCHES,
    CHANNELS,
    DTYPES,
    NAN,
    SIZES,
    ConvCase,
    ConvRun,
    build_views,
    conv_cases,
    make_conv_run,
    plain,
    round_to,
    slot_of,
)
from torch import Tensor

__all__ = ["BATCHES", "CHANNELS", "DTYPES", "NAN", "SIZES", "ConvCase", "ConvRun", "assert_close",
           "assert_outside_slot_poisoned", "async_cases", "build_views", "conv_cases", "make_conv_run", "plain",
           "round_to", "slot_of"]  # fmt: skip


def async_cases() -> list[ConvCase]:
    """Views eligible for the fp16/bf16 kernel's cp.async A path (plain, channels and strides multiples of 8,
    at least BLOCK_K = 32 channels: fewer use the taps-packed layout and the generic loader)."""
    skip = (16, (22, 28), None, (2, 2), (18, 24))
    return [
        ConvCase("async-c48", 3, (17, 23), (plain(48, (17, 23)),), 37, kw={"padding": 1}, pool=True),
        ConvCase("async-c40", 1, (33, 47), (plain(40, (33, 47)),), 70, kw={"padding": 1}, residual=True),
        ConvCase(
            "async-concat-crop", 3, (18, 24), (plain(24, (18, 24)), skip), 37, kw={"padding": 1}, pool=True
        ),
        ConvCase(
            "async-pad-view", 1, (17, 23), ((32, (15, 21), None, (-1, -2), (17, 23)),), 5, kw={"padding": 1}
        ),
    ]


def assert_close(got: Tensor, ref: Tensor, what: str) -> None:
    """Per-dtype tolerance (spec.TOLERANCES); says how many elements are NaN (unwritten) and where it fails."""
    ku.assert_close(got.float(), ref.float(), what, dtype=got.dtype)


def assert_outside_slot_poisoned(buf: Tensor, slot: Tensor, what: str) -> None:
    before = (slot.storage_offset() - buf.storage_offset()) % buf.shape[-1]
    ku.assert_outside_untouched(buf, before, before + slot.shape[-1], what)
