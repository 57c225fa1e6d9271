"""Kernel choice is decided when a plan is prepared (kernels/registry.py: each kernel's `supports(step, dtype)`),
per step, with the reason kept as data; running never re-decides, and a kernel that fails at run time is an
error, not a silent switch to the reference."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

import unet_fast
from unet_fast import UNet
from unet_fast.backends.executor import Executor
from unet_fast.graph.ir import Head
from unet_fast.kernels import registry
from unet_fast.models.weights import randomize_bn


def _fast():
    m = randomize_bn(UNet(3, 3, 4, 3, "batch", "transpose", head="softmax"), seed=13)
    x = torch.randn(2, 3, 20, 28)
    return m, x, unet_fast.optimize(m, x, backend="torch")


@contextmanager
def _fake_backend(**overrides: object) -> Iterator[str]:
    """A backend 'test-fake' whose kernels are the reference's, with `overrides` applied to its Head kernel."""
    name = "test-fake"
    fakes = []
    for k in registry.kernels("torch"):
        fake = dataclasses.replace(k, name=k.name.replace("torch.", f"{name}."), backend=name, label="fake")
        if k.step is Head:
            fake = dataclasses.replace(fake, **overrides)  # type: ignore[arg-type]
        fakes.append(fake)
    registry.register(*fakes)
    try:
        yield name
    finally:
        registry.unregister(*(k.name for k in fakes))


def test_supports_decides_at_prepare_time() -> None:
    m, x, fast = _fast()
    c = fast._entry(tuple(x.shape)).compiled
    with _fake_backend(supports=lambda s, d: "no head here" if isinstance(s, Head) else None) as fake:
        ex = Executor(c.plan, c.buffers, fake, torch.device("cpu"), torch.float32)
        records = {r.kind: r for r in ex.records()}
        assert records["Head"].kernel == "torch.head" and records["Conv"].kernel == "test-fake.conv2d"
        assert records["Head"].backend == "torch" and records["Head"].reference
        assert "no head here" in records["Head"].fallback and not records["Conv"].fallback
        assert records["Head"].passed_over == (("test-fake.head", "no head here"),)
        with torch.no_grad():
            torch.testing.assert_close(ex.run(x.permute(0, 2, 3, 1).contiguous()).permute(0, 3, 1, 2), m(x),
                                       atol=1e-4, rtol=1e-4)  # fmt: skip


def test_a_kernel_failing_at_run_time_is_an_error_and_changes_nothing() -> None:
    _, x, fast = _fast()
    c = fast._entry(tuple(x.shape)).compiled

    def refuse(*args: object, **kwargs: object) -> None:
        raise NotImplementedError("too many classes for this fake kernel")

    with _fake_backend(run=refuse) as fake:
        ex = Executor(c.plan, c.buffers, fake, torch.device("cpu"), torch.float32)
        before = [(p.kernel, p.weight) for p in ex.prepared]
        xn = x.permute(0, 2, 3, 1).contiguous()
        for _ in range(2):  # no per-call fallback: the same error each call, the prepared choice unchanged
            with torch.no_grad(), pytest.raises(NotImplementedError, match="too many classes"):
                ex.run(xn)
        assert all(a == b[0] and p.weight is b[1] for a, b, p in
                   zip((p.kernel for p in ex.prepared), before, ex.prepared, strict=True))  # fmt: skip
        assert not any(r.fallback for r in ex.records())
