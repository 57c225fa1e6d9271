"""`torch.compile(model, backend="unet_fast")`: parity with the eager model on every family we import, what
falls back and why, weights changed after compiling, calls that need gradients, the entry point."""

from __future__ import annotations

import importlib.metadata
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from unet_fast.bench.workloads import lively_weights
from unet_fast.compile_backend import UnetFastFallback, reports, unet_fast_backend
from unet_fast.models.unet import UNet
from unet_fast.parity import assert_parity

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from milesial_unet import MilesialUNet
from monai_like import BasicUNetLike
from smp_like import SmpLikeUnet

REL_L2 = 1e-5  # fp32, as the engine's own parity tests (tests/engine/engine_helpers.py)
AGREEMENT = 0.999
SIZES = [(1, 64, 64), (2, 45, 37), (3, 33, 71)]  # batch > 1, odd sizes, not multiples of the total stride


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _new_reports(before: int) -> list:
    return reports()[before:]


FAMILIES = {
    "unet-same-transpose": lambda: UNet(3, 3, base_channels=8, depth=3),
    "unet-bilinear": lambda: UNet(3, 2, base_channels=8, depth=2, upsample="bilinear"),
    "unet-nearest-sigmoid": lambda: UNet(1, 1, base_channels=8, depth=2, upsample="nearest", head="sigmoid"),
    "milesial": lambda: MilesialUNet(3, 2, bilinear=False, base=8),
    "milesial-bilinear": lambda: MilesialUNet(3, 2, bilinear=True, base=8),
    "smp-resnet18": lambda: SmpLikeUnet("resnet18", in_channels=3, classes=2),
    "monai-basicunet": lambda: BasicUNetLike(in_channels=1, out_channels=2, features=(8, 8, 16, 32, 64, 8)),
}


# MONAI's UpCat calls torch.jit.isinstance, which Dynamo does not trace: the model reaches the backend in
# parts, several of which take two tensors (the skip and the upsampled map). unet_fast.optimize captures it
# whole (torch.export traces isinstance); docs/compile_backend.md says so.
GRAPH_BREAKS = {"monai-basicunet"}


def _input_channels(model: nn.Module) -> int:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels


def _sizes_for(name: str) -> list[tuple[int, int, int]]:
    # smp's encoder (5 stride-2 stages) takes multiples of 32 only; the others take any size
    return [(1, 64, 64), (2, 96, 64), (3, 32, 160)] if name.startswith("smp") else SIZES


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAMILIES))
def test_families_match_eager_at_every_size(name: str) -> None:
    torch.manual_seed(0)
    model = lively_weights(FAMILIES[name]()).eval()
    before = len(reports())
    compiled = torch.compile(model, backend=unet_fast_backend, dynamic=True)
    c = _input_channels(model)
    whole = name not in GRAPH_BREAKS
    with torch.no_grad(), warnings.catch_warnings():
        # every graph of these families runs on the engine, except where Dynamo breaks the model up
        warnings.simplefilter("error" if whole else "ignore", UnetFastFallback)
        for n, h, w in _sizes_for(name):
            x = torch.randn(n, c, h, w)
            ref, out = model(x), compiled(x)
            assert out.shape == ref.shape and out.dtype == ref.dtype
            assert_parity(ref, out, rel_l2=REL_L2, min_agreement=AGREEMENT, what=f"{name} at {n}x{c}x{h}x{w}")
    recs = _new_reports(before)
    if not whole:
        # parity held above; what did not run on the engine says why (several inputs or outputs of a part)
        assert all(r.engine or ("input tensors" in r.reason or "return" in r.reason) for r in recs), recs
        return
    assert recs and all(r.engine for r in recs), [(r.engine, r.reason) for r in recs]
    # one FusedUNet per Dynamo graph; with dynamic=True a graph serves every size with one capture, unless
    # the model's own code branches on a size (our UNet's odd-size pad), which Dynamo guards itself
    assert all(r.fused is not None and len(r.fused.captures) == 1 for r in recs)


def test_default_dynamic_and_report_as_data() -> None:
    model = lively_weights(UNet(3, 2, base_channels=8, depth=2)).eval()
    before = len(reports())
    compiled = torch.compile(model, backend="unet_fast" if _entry_point_installed() else unet_fast_backend)
    with torch.no_grad():
        for n, h, w in [(1, 64, 64), (1, 96, 80), (2, 96, 80)]:
            x = torch.randn(n, 3, h, w)
            assert_parity(model(x), compiled(x), rel_l2=REL_L2, min_agreement=AGREEMENT, what=f"{n}x{h}x{w}")
    recs = _new_reports(before)
    assert [r.engine for r in recs] == [True] * len(recs) and len(recs) >= 2  # static first, then dynamic
    assert recs[0].input_shape == (1, 3, 64, 64)
    assert "FusedUNet" in recs[0].report() and recs[0].reason == ""


def _entry_point_installed() -> bool:
    eps = importlib.metadata.entry_points(group="torch_dynamo_backends")
    return "unet_fast" in eps.names


def test_entry_point_is_registered() -> None:
    """`backend="unet_fast"` resolves through the package's `torch_dynamo_backends` entry point (installed
    metadata: `pip install -e .` writes it, as CI does)."""
    try:
        importlib.metadata.distribution("unet_fast")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("unet_fast is not installed as a distribution here (run `pip install -e .`)")
    eps = importlib.metadata.entry_points(group="torch_dynamo_backends")
    if "unet_fast" not in eps.names:
        pytest.fail("the installed unet_fast has no torch_dynamo_backends entry point: reinstall (pip install -e .)")
    assert eps["unet_fast"].load() is unet_fast_backend
    from torch._dynamo.backends.registry import lookup_backend

    assert lookup_backend("unet_fast") is unet_fast_backend


class _TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.conv(y)


class _GraphBreak(nn.Module):
    """A data-dependent Python branch: Dynamo splits the graph; each part is compiled on its own."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.a(x))
        if float(y.mean()) > -1.0:  # always true; a graph break all the same
            y = y * 2
        return self.b(y)


@pytest.mark.parametrize("fallback", ["eager", "inductor"])
def test_what_the_engine_cannot_take_falls_back_with_the_reason(fallback: str) -> None:
    model = lively_weights(_TwoInputs()).eval()
    before = len(reports())
    compiled = torch.compile(model, backend=unet_fast_backend, options={"fallback": fallback})
    x, y = torch.randn(2, 3, 17, 19), torch.randn(2, 3, 17, 19)
    with torch.no_grad(), pytest.warns(UnetFastFallback, match="2 input tensors"):
        out = compiled(x, y)
    with torch.no_grad():
        torch.testing.assert_close(out, model(x, y), rtol=1e-5, atol=1e-5)
    rec = _new_reports(before)[-1]
    assert not rec.engine and "2 input tensors" in rec.reason and "not on the engine" in rec.report()


def test_graph_breaks_each_part_runs_and_matches() -> None:
    model = lively_weights(_GraphBreak()).eval()
    before = len(reports())
    compiled = torch.compile(model, backend=unet_fast_backend)
    x = torch.randn(2, 3, 21, 18)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)
    assert len(_new_reports(before)) >= 2  # Dynamo handed over more than one graph


def test_training_mode_model_falls_back() -> None:
    model = lively_weights(UNet(3, 2, base_channels=8, depth=2))
    model.train()
    before = len(reports())
    compiled = torch.compile(model, backend=unet_fast_backend)
    x = torch.randn(2, 3, 32, 32)
    ref_model = __import__("copy").deepcopy(model)
    with torch.no_grad(), pytest.warns(UnetFastFallback, match="training"):
        out = compiled(x)
    with torch.no_grad():
        torch.testing.assert_close(out, ref_model(x), rtol=1e-5, atol=1e-5)  # batch statistics, as eager
    assert model.training and not _new_reports(before)[-1].engine


def test_weights_changed_after_compiling_are_seen() -> None:
    model = lively_weights(UNet(3, 2, base_channels=8, depth=2)).eval()
    compiled = torch.compile(model, backend=unet_fast_backend)
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        compiled(x)
        first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        first_conv.weight.mul_(-1.5)  # an in-place update, as an optimizer step makes
        with pytest.warns(UnetFastFallback, match="weights changed"):
            out = compiled(x)
        assert_parity(model(x), out, rel_l2=REL_L2, min_agreement=AGREEMENT, what="after an in-place update")
        first_conv.weight.data = torch.randn_like(first_conv.weight)  # a replaced tensor
        with pytest.warns(UnetFastFallback, match="weights changed"):
            out = compiled(x)
        assert_parity(model(x), out, rel_l2=REL_L2, min_agreement=AGREEMENT, what="after p.data = ...")


def test_a_call_that_needs_gradients_runs_eagerly() -> None:
    model = lively_weights(UNet(3, 2, base_channels=8, depth=2)).eval()
    compiled = torch.compile(model, backend=unet_fast_backend)
    x = torch.randn(1, 3, 32, 32, requires_grad=True)
    with pytest.warns(UnetFastFallback, match="gradients"):
        out = compiled(x)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_options_reach_optimize_and_bad_options_are_errors() -> None:
    model = lively_weights(UNet(3, 2, base_channels=16, depth=2)).eval()
    compiled = torch.compile(model, backend=unet_fast_backend, options={"dtype": torch.bfloat16})
    x = torch.randn(2, 3, 36, 28)
    with torch.no_grad():
        out = compiled(x)
        ref = model(x)
    assert out.dtype == torch.float32  # bf16 inside, fp32 at the module boundary like the model
    # bf16 bound of the engine's bf16 tests (tests/engine/test_cpu_bf16.py): rel-L2 under 2e-2
    assert_parity(ref, out, rel_l2=2e-2, min_agreement=0.99, what="bf16 through torch.compile")
    torch._dynamo.reset()
    bad = torch.compile(model, backend=unet_fast_backend, options={"no_such_option": 1})
    with pytest.raises(Exception, match="unknown unet_fast options"):
        bad(x)


def test_callers_model_is_left_as_it_was() -> None:
    model = lively_weights(UNet(3, 2, base_channels=8, depth=2)).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    compiled = torch.compile(model, backend=unet_fast_backend)
    with torch.no_grad():
        compiled(torch.randn(1, 3, 32, 32))
    assert not model.training and [p.requires_grad for p in model.parameters()] == flags
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
