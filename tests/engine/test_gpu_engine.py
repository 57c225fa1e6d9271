"""The engine on the GPU backends (triton, cuda), on a CUDA device: every model family we import (our UNet in
every configuration of test_model_families, milesial's layout, the smp.Unet stand-in, the real package when
importable), fp32 / fp16 / bf16 storage, every output mode and memory format, CUDA graphs off and on, odd
sizes, batch > 1 and new shapes after the first. Every step must run on the backend's kernels (no step
falls back to the torch reference), buffers are NaN-poisoned, and the output matches the fp32 PyTorch model
on CPU within the bounds below. Skips cleanly without a CUDA device; the Triton rows need compiled Triton
(UNET_FAST_TEST_ON_GPU=1: under the interpreter, tests/backends runs Triton's small engine tests).
benchmarks/gpu/first_contact.py runs these (`-m gpu`) on the lent GPU machine."""

from __future__ import annotations

import pytest
import torch
from engine_helpers import MilesialUNet, SmpLikeUnet, randomize_bn
from test_model_families import UNET_CONFIGS

import unet_fast
from unet_fast import UNet
from unet_fast.parity import assert_parity

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none visible to torch)"),
]

BACKENDS = ("triton", "cuda")
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Whole-network bounds against the fp32 CPU model (tests/kernels/cuda/test_cuda_engine.py's): a dozen
# layers, each one rounding to the storage dtype with fp32 accumulation. Argmax agreement allows only the
# pixels whose top two classes are that close to flip.
BOUNDS = {torch.float32: (1e-4, 0.999), torch.float16: (1e-2, 0.99), torch.bfloat16: (5e-2, 0.98)}
MODES = ("model", "logits", "probabilities", "classes")


def _unet(cfg: tuple):
    depth, norm, up, ac, pad, h, w = cfg
    base = 4 if depth < 4 else 2
    return (lambda: UNet(3, 3, base, depth, norm, up, ac, pad, head="softmax")), (2, 3, h, w)


FAMILIES = {
    **{"unet-" + "-".join(map(str, c)): _unet(c) for c in UNET_CONFIGS},
    "milesial-transpose": (lambda: MilesialUNet(3, 2, False, base=4), (2, 3, 36, 44)),
    "milesial-bilinear": (lambda: MilesialUNet(3, 2, True, base=4), (2, 3, 36, 44)),
    "smp-like-resnet18": (
        lambda: SmpLikeUnet("resnet18", 3, 3, decoder_channels=(32, 16, 16, 8, 8)),
        (2, 3, 40, 57),
    ),
    "smp-like-resnet34": (
        lambda: SmpLikeUnet("resnet34", 3, 3, decoder_channels=(32, 16, 16, 8, 8)),
        (2, 3, 40, 57),
    ),
    "smp-resnet18": (None, (2, 3, 64, 64)),  # the real package, where importable
}


def _model(family: str) -> torch.nn.Module:
    build, _ = FAMILIES[family]
    if build is None:
        smp = pytest.importorskip(
            "segmentation_models_pytorch", reason="segmentation_models_pytorch is not importable"
        )
        build = lambda: smp.Unet("resnet18", encoder_weights=None, in_channels=3, classes=2,  # noqa: E731
                                 decoder_channels=(32, 16, 16, 8, 8))  # fmt: skip
    torch.manual_seed(0)
    return randomize_bn(build(), seed=7)


def _require(backend: str) -> None:
    if backend == "triton":
        from unet_fast.kernels.triton import common

        if common.interpreting():
            pytest.skip(
                "TRITON_INTERPRET=1: run with UNET_FAST_TEST_ON_GPU=1 to test compiled Triton on the GPU"
            )


def _check(model: torch.nn.Module, fast: unet_fast.FusedUNet, x: torch.Tensor, dtype: torch.dtype, what: str,
           calls: int = 1) -> None:  # fmt: skip
    """Poisoned buffers, no step on the torch reference, parity with the fp32 model on CPU (every call:
    a CUDA graph replays from the second call on)."""
    ex = fast.executor_for(tuple(x.shape))
    ex.poison = True
    notes = [f"{r.index} {r.kind} {r.name}: {r.fallback}" for r in ex.records() if r.reference]
    assert not notes, f"{what}: steps not on the backend's kernels: {notes}\n{fast.report()}"
    with torch.no_grad():
        ref = model(x.cpu())
    rel, agree = BOUNDS[dtype]
    for i in range(calls):
        with torch.inference_mode():
            out = fast(x)
        assert out.device == x.device and out.shape == ref.shape and out.dtype == ref.dtype, (
            f"{what}: got {out.shape} {out.dtype} on {out.device}, expected {ref.shape} {ref.dtype}")  # fmt: skip
        assert_parity(ref, out.cpu(), rel_l2=rel, min_agreement=agree, what=f"{what} (call {i + 1})")


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_on_gpu(family: str, backend: str, dtype: torch.dtype) -> None:
    _require(backend)
    model = _model(family)
    x = torch.randn(FAMILIES[family][1], device="cuda")
    for graphs in (False, True):
        fast = unet_fast.optimize(model, x, backend=backend, dtype=dtype, cuda_graphs=graphs)
        assert fast.backend.name == backend, fast.report()
        _check(
            model,
            fast,
            x,
            dtype,
            f"{family} {backend} {dtype} cuda_graphs={graphs}",
            calls=2 if graphs else 1,
        )


@pytest.fixture(scope="module")
def head_model() -> UNet:
    return randomize_bn(UNet(3, 3, 4, 3, "batch", "transpose", head="softmax"), seed=12)


def _layout(t: torch.Tensor) -> str:
    if t.dim() != 4 or t.is_contiguous():
        return "contiguous"
    return "channels_last" if t.is_contiguous(memory_format=torch.channels_last) else "other"


@pytest.mark.parametrize("fmt", ["contiguous", "channels_last"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_output_modes_on_gpu(head_model: UNet, backend: str, mode: str, fmt: str) -> None:
    """What each output mode returns (value, shape, dtype, memory format as eager gives it), with and without
    CUDA graphs, fp16 storage, batch 3 at an odd size."""
    _require(backend)
    x = torch.randn(3, 3, 27, 21, device="cuda")
    if fmt == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        probs = head_model(x.cpu())
        logits_model = UNet(3, 3, 4, 3, "batch", "transpose", head="logits")
        logits_model.load_state_dict(head_model.state_dict())
        ref = {"model": probs, "probabilities": probs, "logits": logits_model.eval()(x.cpu()),
               "classes": probs.argmax(1)}[mode]  # fmt: skip
    for graphs in (False, True):
        fast = unet_fast.optimize(
            head_model, x, backend=backend, dtype=torch.float16, output=mode, cuda_graphs=graphs
        )
        fast.executor_for(tuple(x.shape)).poison = True
        for call in range(2):
            with torch.inference_mode():
                out = fast(x)
            what = f"{backend} output={mode} {fmt} cuda_graphs={graphs} call {call + 1}"
            assert out.shape == ref.shape and out.dtype == ref.dtype, f"{what}: {out.shape} {out.dtype}"
            assert _layout(out) == _layout(ref), f"{what}: strides {out.stride()} vs eager's {ref.stride()}"
            if mode == "classes":
                assert_parity(probs, out.cpu(), min_agreement=0.99, what=what)
            else:
                assert_parity(ref, out.cpu(), rel_l2=BOUNDS[torch.float16][0], min_agreement=0.99, what=what)


@pytest.mark.parametrize("graphs", [False, True], ids=["eager", "graphs"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_new_shapes_after_the_first_on_gpu(head_model: UNet, backend: str, graphs: bool) -> None:
    """One optimize, then other batches and odd sizes (a plan, and with graphs a CUDA graph, per shape), and
    back to the first shape: each call right, whatever ran before it."""
    _require(backend)
    fast = unet_fast.optimize(head_model, torch.randn(2, 3, 32, 40, device="cuda"), backend=backend,
                              dtype=torch.bfloat16, cuda_graphs=graphs)  # fmt: skip
    for shape in [(2, 3, 32, 40), (1, 3, 17, 23), (4, 3, 45, 38), (2, 3, 32, 40), (1, 3, 64, 48)]:
        _check(head_model, fast, torch.randn(shape, device="cuda"), torch.bfloat16, f"{backend} {shape}")
    assert len(fast.captures) == 1, "batch, H and W are dynamic: no re-capture"
