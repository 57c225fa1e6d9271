"""Backends: every backend registers a kernel for every step kind, selection explains itself, and the one
executor runs the same plan on each backend (triton under the interpreter; cuda where a GPU exists)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

import unet_fast
from unet_fast import UNet
from unet_fast.backends import BACKENDS, BackendUnavailable, available_backends, resolve_backend
from unet_fast.kernels import registry
from unet_fast.models.weights import randomize_bn
from unet_fast.parity import assert_parity

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none visible)")


@pytest.mark.parametrize("name", ["torch", "cpu", "triton", "cuda"])
def test_every_backend_registers_every_step_kind(name: str) -> None:
    # A step kind without a kernel would make the executor run the torch reference for it: fail loudly here.
    kernels = BACKENDS[name].kernels()
    missing = [t.__name__ for t in registry.STEP_TYPES
               if not any(k.step is t and torch.float32 in k.dtypes for k in kernels)]  # fmt: skip
    assert not missing, f"{name} registers no fp32 kernel for {missing}"
    assert torch.float32 in BACKENDS[name].supported_dtypes()


def test_selection_explains_itself() -> None:
    cpu = torch.device("cpu")
    b, why = resolve_backend("auto", cpu)
    assert b.name == "cpu" and "auto: picked 'cpu' for cpu" in why
    assert resolve_backend("torch", cpu)[0].name == "torch"
    if torch.float16 not in BACKENDS["cpu"].supported_dtypes():
        b, why = resolve_backend("auto", cpu, torch.float16)
        assert b.name == "torch" and "cpu: its kernels support float32" in why
    with pytest.raises(ValueError, match="unknown backend 'fast'; choose from 'auto', 'torch', 'cpu'"):
        resolve_backend("fast", cpu)
    reasons = available_backends(cpu)
    assert reasons["torch"] == "" and reasons["cpu"] == ""
    if not torch.cuda.is_available():
        assert reasons["cuda"]  # says why (no device / not built)
        with pytest.raises(
            BackendUnavailable, match=r"backend 'cuda' cannot run: .+ Usable here on cpu: torch, cpu"
        ):
            resolve_backend("cuda", cpu)
    with pytest.raises(BackendUnavailable, match="runs on CPU tensors"):
        BACKENDS["cpu"].require(torch.device("meta"))


def test_triton_on_cpu_needs_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailable, match="TRITON_INTERPRET=1"):
            resolve_backend("triton", torch.device("cpu"))


def _tiny_model(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    if name == "unet-transpose":
        m = UNet(3, 2, 4, 2, "batch", "transpose", head="softmax")
        return randomize_bn(m, seed=3), torch.randn(1, 3, 17, 20)  # odd: the decoder pads, the pool floors
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
    from milesial_unet import MilesialUNet

    return randomize_bn(MilesialUNet(3, 2, bilinear=True, base=2), seed=3), torch.randn(1, 3, 19, 22)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="runs the Triton interpreter on CPU")
@pytest.mark.parametrize("name", ["unet-transpose", "milesial-bilinear"])
def test_triton_interpreter_matches(name: str) -> None:
    # tiny on purpose: the interpreter runs every program instance in Python (smp's ResNet-18 took ~5 min)
    m, x = _tiny_model(name)
    fast = unet_fast.optimize(m, x, backend="triton")
    fast.executor_for(tuple(x.shape)).poison = True
    steps = fast.report_data().steps
    assert steps and all(s.backend == "triton" for s in steps if s.kind != "Fallback"), fast.report()
    with torch.no_grad():
        assert_parity(m(x), fast(x), rel_l2=1e-5, min_agreement=0.999, what=f"triton {name}")


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("name", ["triton", "cuda"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_gpu_backends_match(name: str, dtype: torch.dtype) -> None:
    if name == "triton" and os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("TRITON_INTERPRET=1: run with UNET_FAST_TEST_ON_GPU=1 to test compiled Triton on the GPU")
    m = randomize_bn(UNet(3, 2, 8, 3, "batch", "bilinear", head="softmax"), seed=4).cuda()
    x = torch.randn(2, 3, 45, 38, device="cuda")
    fast = unet_fast.optimize(m, x, backend=name, dtype=dtype)
    fast.executor_for(tuple(x.shape)).poison = True
    with torch.no_grad():
        ref = m(x)
    rel = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 3e-2}[dtype]
    assert_parity(ref, fast(x), rel_l2=rel, min_agreement=0.99, what=f"{name} {dtype}")
