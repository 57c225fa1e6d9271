"""Shared helpers of the Triton kernel tests: poisoned slot buffers and parity asserts that explain a
failure (where, how many, NaN counts), with tolerances from spec.TOLERANCES, and the configs a test checks
(the interpreter's one, or on a GPU every shipped config: conftest.py)."""

from __future__ import annotations

import kernel_testutil as ku
import torch
from torch import Tensor

from unet_fast.kernels.triton import common, configs

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
DTYPE_IDS = ("fp32", "fp16", "bf16")


def device() -> str:
    """Where the kernels under test run: 'cpu' under the interpreter, else 'cuda' (conftest.py)."""
    return "cpu" if common.interpreting() else "cuda"


def launch_configs(op: str, dtype: torch.dtype, interpreter_config: dict) -> list[dict]:
    """The configs a test launches `op` with: `interpreter_config` under the interpreter; on a GPU every
    shipped config of configs.py for the dtype and the GPU's arch, since any one of them can miscompile
    (a num_warps=8 conv loop did in Inductor: pytorch/pytorch#173068). fp32 with tf32 uses the fp32 ones."""
    if common.interpreting():
        return [interpreter_config]
    major, minor = torch.cuda.get_device_capability()
    return configs.configs_for(op, dtype, 10 * major + minor)


def rand(*shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.randn(*shape).to(dtype)


def conv_weight(cout: int, cin: int, kh: int, kw: int | None = None) -> Tensor:
    """fp32 OIHW, scaled by 1/sqrt(fan_in) so outputs stay O(1) whatever the reduction length."""
    kw = kh if kw is None else kw
    return torch.randn(cout, cin, kh, kw) / (cin * kh * kw) ** 0.5


def poisoned_slot(n: int, h: int, w: int, c: int, dtype: torch.dtype, *, before: int = 3, after: int = 2):
    """A NaN-filled NHWC buffer with `before` + c + `after` channels and its [before, before + c) slot."""
    return ku.poisoned_slot((n, h, w, c), dtype, before=before, after=after)


def assert_outside_untouched(buf: Tensor, start: int, stop: int, what: str = "") -> None:
    ku.assert_outside_untouched(buf, start, stop, what)


def assert_parity(got: Tensor, ref: Tensor, dtype: torch.dtype | None = None, what: str = "") -> None:
    """Against the spec reference with spec.TOLERANCES[dtype]; NaN (unwritten) fails: kernel_testutil."""
    ku.assert_close(got.float(), ref.float(), what, dtype=dtype or got.dtype)
