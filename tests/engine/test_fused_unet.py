"""FusedUNet as a drop-in module: bad input, output options, report, new shapes, threads, nn.Module behaviour."""

from __future__ import annotations

import pickle
import threading

import pytest
import torch
from engine_helpers import check_parity, poisoned, randomize_bn
from torch import nn

import unet_fast
from unet_fast import UNet
from unet_fast.backends import BackendUnavailable

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none visible)")


@pytest.fixture(scope="module")
def model() -> UNet:
    torch.manual_seed(1)
    return randomize_bn(UNet(3, 3, 4, 3, "batch", "transpose", head="softmax"), seed=1)


@pytest.fixture(scope="module")
def fast(model: UNet) -> unet_fast.FusedUNet:
    return unet_fast.optimize(model, torch.randn(2, 3, 32, 40), backend="torch")


@pytest.fixture(scope="module")
def valid_model() -> UNet:
    torch.manual_seed(2)
    return UNet(1, 2, 2, 3, None, "transpose", padding="valid").eval()


# -- bad input ------------------------------------------------------------------------------------------


def test_wrong_channels_rank_dtype_device(fast: unet_fast.FusedUNet) -> None:
    with pytest.raises(ValueError, match="expects 3 input channels, got 4"):
        fast(torch.randn(1, 4, 32, 40))
    with pytest.raises(ValueError, match=r"4-D \(N, C, H, W\)"):
        fast(torch.randn(3, 32, 40))
    with pytest.raises(ValueError, match="floating-point"):
        fast(torch.zeros(1, 3, 32, 40, dtype=torch.int64))
    with pytest.raises(ValueError, match="is on meta but this FusedUNet runs on cpu"):
        fast(torch.empty(1, 3, 32, 40, device="meta"))
    with pytest.raises(ValueError, match=r"torch\.Tensor"):
        fast([[1.0]])


def test_size_a_valid_conv_model_cannot_take_names_nearest(valid_model: UNet) -> None:
    fast = unet_fast.optimize(valid_model, torch.randn(1, 1, 92, 92), backend="torch")
    with pytest.raises(ValueError, match="nearest valid sizes are 92 or 100"):
        fast(torch.randn(1, 1, 96, 92))
    x = torch.randn(1, 1, 100, 92)  # a valid new size: captured again, right
    check_parity(valid_model, fast, x, "valid UNet at a new size")


def test_size_error_for_a_model_without_its_own_check() -> None:
    class Strict(nn.Module):  # concat of a pooled-then-upsampled path: odd sizes do not line up
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(4, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.a(x)
            z = nn.functional.interpolate(nn.functional.max_pool2d(y, 2), scale_factor=2)
            return self.b(torch.cat([y, z], 1))

    fast = unet_fast.optimize(Strict().eval(), torch.randn(1, 1, 8, 8), backend="torch")
    with pytest.raises(ValueError, match="nearest valid height: 8 or 10"):
        fast(torch.randn(1, 1, 9, 8))


def test_nan_check_is_opt_in(model: UNet) -> None:
    x = torch.randn(1, 3, 16, 16)
    x[0, 1, 3, 4] = float("nan")
    x[0, 2, 5, 5] = float("inf")
    checked = unet_fast.optimize(model, x.nan_to_num(), backend="torch", check_finite=True)
    with pytest.raises(ValueError, match="2 NaN/Inf"):
        checked(x)
    unchecked = checked.with_backend("torch")
    unchecked.__dict__["config"] = unchecked.config.__class__(
        **{**unchecked.config.__dict__, "check_finite": False}
    )
    assert torch.isnan(unchecked(x)).any()  # off by default: garbage in, garbage out, no cost


def test_training_mode_model_is_refused(model: UNet) -> None:
    model.train()
    try:
        with pytest.raises(ValueError, match="training mode"):
            unet_fast.optimize(model, torch.randn(1, 3, 16, 16), backend="torch")
    finally:
        model.eval()


def test_unsupported_layer_falls_back_and_is_right() -> None:
    class WithOddLayers(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.gn = nn.Conv2d(3, 4, 3, padding=1), nn.GroupNorm(2, 4)
            self.b, self.head = nn.Conv2d(4, 4, 3, padding=1, groups=2), nn.Conv2d(4, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.tanh(self.gn(self.a(x)))
            return torch.softmax(self.head(torch.relu(self.b(y))), 1)

    m = WithOddLayers().eval()
    x = torch.randn(2, 3, 11, 13)
    fast = unet_fast.optimize(m, x, backend="torch")
    data = fast.report_data()
    reasons = " ".join(s.fallback for s in data.steps if s.kind == "Fallback")
    assert data.plan is not None and data.plan.fallbacks == 3, fast.report()
    for name in ("group_norm", "tanh", "grouped convolution (groups=2)"):
        assert name in reasons, reasons
    check_parity(m, fast, x, "model with unsupported layers")


def test_backend_errors(model: UNet) -> None:
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        unet_fast.optimize(model, x, backend="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailable, match=r"backend 'cuda' cannot run: .+"):
            unet_fast.optimize(model, x, backend="cuda")
    with pytest.raises(ValueError, match="cuda_graphs=True needs a CUDA device"):
        unet_fast.optimize(model, x, backend="torch", cuda_graphs=True)
    with pytest.raises(ValueError, match="supports dtypes"):
        unet_fast.optimize(model, x, backend="cpu", dtype=torch.float64)


# -- outputs ------------------------------------------------------------------------------------------


def test_output_options(model: UNet) -> None:
    x = torch.randn(2, 3, 20, 24)
    fast = unet_fast.optimize(model, x, backend="torch", output="classes")
    with torch.no_grad():
        probs = model(x)
    classes = poisoned(fast, x)(x)
    assert classes.dtype == torch.int64 and classes.shape == (2, 20, 24)
    assert (classes == probs.argmax(1)).float().mean() > 0.999
    (plan,) = fast.plans().values()
    assert plan.output_kind == "index" and plan.steps[-1].kind == "Head" and plan.steps[-1].op == "argmax"
    logits = unet_fast.optimize(model, x, backend="torch", output="logits")(x)
    torch.testing.assert_close(torch.softmax(logits, 1), probs, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="output='pixels' is not one of"):
        unet_fast.optimize(model, x, output="pixels")


def test_fp16_and_bf16_storage(model: UNet) -> None:
    x = torch.randn(1, 3, 24, 24)
    with torch.no_grad():
        ref = model(x)
    for dtype, tol in ((torch.float16, 5e-3), (torch.bfloat16, 3e-2)):
        out = unet_fast.optimize(model, x, backend="torch", dtype=dtype)(x)
        assert out.dtype == torch.float32  # same dtype as model(x)
        assert (out - ref).abs().max() < tol, dtype


# -- the report -----------------------------------------------------------------------------------------


def test_report_lists_fusions(model: UNet, fast: unet_fast.FusedUNet) -> None:
    data = fast.report_data()
    assert data.backend == "torch" and data.backend_reason == "requested 'torch'"
    assert data.plan is not None and data.plan.fallbacks == 0
    assert data.plan.steps_by_kind == {"Conv": 14, "ConvTranspose2x2": 3, "Head": 1}
    steps = fast.plans()[data.plan.shape].steps
    convs = [s for s in steps if s.kind == "Conv"]
    # fold_bn: 14 BatchNorms folded (none left as a fallback); fuse_activation: 14 ReLUs in their convs;
    # fuse_pool: 3 2x2 max-pools written by their convs; eliminate_concat: 3 concats written in place (each
    # transposed conv writes a channel slot of its decoder's input buffer); the 1x1 conv + op is one Head
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 14
    assert sum(s.act == "relu" for s in convs) == 14 and sum(s.pool_out is not None for s in convs) == 3
    slots = [s for s in steps if s.kind == "ConvTranspose2x2"]
    assert all(s.out.channel_offset > 0 or s.out.channels < fast.plans()[data.plan.shape].buffers[s.out.buffer].channels
               for s in slots)  # fmt: skip
    assert len(data.steps) == 18 and data.steps[-1].kind == "Head"


def test_auto_backend_says_which(model: UNet) -> None:
    fast = unet_fast.optimize(model, torch.randn(1, 3, 16, 16))
    assert fast.backend.name == "cpu"  # the C++ extension is built here
    assert fast.report_data().backend_reason.startswith("auto: picked 'cpu' for cpu")


# -- shapes, threads, module behaviour ------------------------------------------------------------------


def test_new_batch_and_size_reuse_the_one_capture(model: UNet, fast: unet_fast.FusedUNet) -> None:
    check_parity(model, fast, torch.randn(3, 3, 32, 40), "batch 3")
    check_parity(model, fast, torch.randn(1, 3, 24, 16), "new H/W")
    assert len(fast.captures) == 1 and fast.captures[0].dynamic  # batch, H and W are dynamic: no re-capture
    assert {(3, 32, 40), (1, 24, 16)} <= set(fast.cached_shapes())


def test_threads_do_not_corrupt_each_other(model: UNet, fast: unet_fast.FusedUNet) -> None:
    xs = [torch.randn(2, 3, 32, 40) for _ in range(4)]
    with torch.no_grad():
        refs = [model(x) for x in xs]
    results: dict[int, list[torch.Tensor]] = {i: [] for i in range(4)}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(3):
                results[i].append(fast(xs[i]).clone())
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i in range(4):
        for out in results[i]:
            torch.testing.assert_close(out, refs[i], atol=1e-5, rtol=1e-5)


def test_module_behaviour(model: UNet, fast: unet_fast.FusedUNet) -> None:
    x = torch.randn(1, 3, 32, 40)
    assert isinstance(fast, nn.Module)
    assert fast.state_dict() == {} or len(fast.state_dict()) == 0  # the original's weights are not needed
    assert fast.eval() is fast and fast.to("cpu") is fast
    with torch.inference_mode():
        a = fast(x)
    with torch.no_grad():
        b = fast(x)
    torch.testing.assert_close(a, b)
    # independent of the original model after optimize
    m2 = randomize_bn(UNet(3, 3, 4, 3, "batch", "transpose", head="softmax"), seed=1)
    f2 = unet_fast.optimize(m2, x, backend="torch")
    with torch.no_grad():
        ref = m2(x)
        for p in m2.parameters():
            p.zero_()
    torch.testing.assert_close(f2(x), ref, atol=1e-5, rtol=1e-5)
    # picklable: the config and the whole module
    cfg = pickle.loads(pickle.dumps(fast.config))
    assert cfg == fast.config
    f3 = pickle.loads(pickle.dumps(f2))
    torch.testing.assert_close(f3(x), ref, atol=1e-5, rtol=1e-5)


def test_engine_is_in_eval_mode_and_run_as_is_by_sliding_window(model: UNet, fast: unet_fast.FusedUNet) -> None:
    """The engine is an inference module: eval mode from the start, so sliding_window_inference (which
    guards a training-mode model with a private copy) runs this engine, not a deep copy of it per call."""
    from unet_fast.inference.sliding_window import sliding_window_inference
    from unet_fast.model_guard import eval_model

    assert fast.training is False and eval_model(fast) is fast
    assert not any(k[1:] == (16, 24) for k in fast.cached_shapes())
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        got = sliding_window_inference(x, fast, (16, 24), overlap=0.5, batch_size=2)
        want = sliding_window_inference(x, model, (16, 24), overlap=0.5, batch_size=2)
    assert any(k[1:] == (16, 24) for k in fast.cached_shapes())  # this engine's plan cache took the patches
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_half_moves_the_storage_dtype(model: UNet) -> None:
    x = torch.randn(1, 3, 16, 16)
    f = unet_fast.optimize(model, x, backend="torch").half()
    assert f.dtype == torch.float16 and f.report_data().dtype == "float16"
    assert (f(x) - model(x)).abs().max() < 5e-3


@pytest.mark.gpu
@requires_cuda
def test_cuda_backend_and_graphs(model: UNet) -> None:
    m = model.cuda()
    try:
        x = torch.randn(2, 3, 32, 40, device="cuda")
        for kw in ({}, {"cuda_graphs": True}):
            fast = unet_fast.optimize(m, x, backend="cuda", **kw)
            check_parity(m, fast, x, f"cuda {kw}")
            check_parity(m, fast, x, f"cuda {kw}, second call")
    finally:
        model.cpu()


def test_arena_is_reused_across_calls_and_private_per_thread(fast: unet_fast.FusedUNet) -> None:
    x = torch.randn(2, 3, 32, 40)
    ex = fast.executor_for(tuple(x.shape))
    fast(x)
    arena = ex._arena(2)
    fast(x)
    assert ex._arena(2) is arena  # same storage on the next call of this shape
    other: list[torch.Tensor] = []
    t = threading.Thread(target=lambda: other.append(ex._arena(2)))
    t.start()
    t.join()
    assert other[0].data_ptr() != arena.data_ptr()  # another thread gets its own
    out1, out2 = fast(x), fast(x)
    assert out1.data_ptr() != out2.data_ptr()  # outputs are never arena memory


def test_model_export_cannot_trace_runs_whole_as_one_fallback() -> None:
    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 2, 3, padding=1), nn.Conv2d(3, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.a(x) if bool(x.mean() > 0) else self.b(x)  # a branch on the data

    m = DataDependent().eval()
    x = torch.randn(1, 3, 8, 8)
    fast = unet_fast.optimize(m, x, backend="torch")
    data = fast.report_data()
    assert data.plan is not None and data.plan.fallbacks == 1
    assert "torch.export failed" in data.steps[0].fallback + " ".join(c.reason for c in data.captures)
    for sign in (1, -1):
        xi = x.abs() * sign
        torch.testing.assert_close(fast(xi), m(xi))
