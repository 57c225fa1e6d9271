"""Kernel support is decided when a plan is prepared (Backend.supports / the kernel module's limits); running
never rewrites the prepared steps, even when a kernel refuses a call at run time."""

from __future__ import annotations

import types

import torch

import unet_fast
from unet_fast import UNet
from unet_fast.backends import BACKENDS
from unet_fast.backends.executor import Executor
from unet_fast.bench.workloads import randomize_bn
from unet_fast.kernels import spec


def _fast():
    m = randomize_bn(UNet(3, 3, 4, 3, "batch", "transpose", head="softmax"), seed=13)
    x = torch.randn(2, 3, 20, 28)
    return m, x, unet_fast.optimize(m, x, backend="torch")


def test_supports_decides_at_prepare_time() -> None:
    m, x, fast = _fast()
    c = fast._entry(tuple(x.shape)).compiled
    cpu = BACKENDS["cpu"].kernels()
    ex = Executor(c.plan, c.buffers, cpu, "cpu", torch.device("cpu"), torch.float32,
                  supports=lambda s: "no head here" if s.kind == "Head" else "")  # fmt: skip
    kinds = {p.step.kind: p.kernels for p in ex.prepared}
    assert kinds["Head"] is spec and kinds["Conv"] is cpu
    assert any("no head here" in n for n in ex.step_notes())
    with torch.no_grad():
        torch.testing.assert_close(ex.run(x.permute(0, 2, 3, 1).contiguous()).permute(0, 3, 1, 2), m(x),
                                   atol=1e-4, rtol=1e-4)  # fmt: skip


def test_a_kernel_refusing_at_run_time_changes_nothing_shared() -> None:
    m, x, fast = _fast()
    c = fast._entry(tuple(x.shape)).compiled

    def refuse(*args, **kwargs):
        raise NotImplementedError("too many classes for this fake kernel")

    fake = types.SimpleNamespace(**{k: getattr(spec, k) for k in dir(spec) if not k.startswith("_")})
    fake.head = refuse
    ex = Executor(c.plan, c.buffers, fake, "fake", torch.device("cpu"), torch.float32)
    before = list(ex.prepared)
    xn = x.permute(0, 2, 3, 1).contiguous()
    prepared_for_reference = []
    with torch.no_grad():
        for _ in range(2):
            torch.testing.assert_close(ex.run(xn).permute(0, 3, 1, 2), m(x), atol=1e-4, rtol=1e-4)
            prepared_for_reference.append(len(ex._reference_weights))
    # the refused step's reference weights are prepared on the first refusal and reused by the next call
    assert prepared_for_reference[0] > 0 and prepared_for_reference[0] == prepared_for_reference[1]
    assert all(a is b for a, b in zip(before, ex.prepared, strict=True))
    assert any("refused" in n for n in ex.step_notes())
