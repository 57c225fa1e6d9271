"""No public entry point that takes a model changes it (issue 12, fault 1): mode of every submodule,
parameters, buffers (BN running statistics, num_batches_tracked), requires_grad, grads, device and dtype
are compared exactly before and after each call, on a model in training mode with one submodule in eval
mode and some parameters frozen (what a fine-tuning loop that exports a checkpoint holds)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import unet_fast
from unet_fast import UNet
from unet_fast.bench.workloads import lively_weights

HERE = Path(__file__).resolve().parent


def mixed_model() -> UNet:
    """Small BN U-Net, lively weights; training mode except one decoder block; encoder frozen; a grad set."""
    torch.manual_seed(0)
    model = lively_weights(UNet(3, 3, base_channels=4, depth=2, norm="batch"), 0).train()
    children = list(model.named_children())
    assert len(children) > 2
    children[-2][1].eval()  # one subtree in eval mode: "mode" is per submodule, not one flag
    params = list(model.parameters())
    for p in params[: len(params) // 2]:
        p.requires_grad_(False)
    params[-1].grad = torch.full_like(params[-1], 0.25)
    return model


def snapshot(model: nn.Module) -> dict:
    return {
        "modes": {n: m.training for n, m in model.named_modules()},
        "params": {n: (p, p.detach().clone(), p.requires_grad, p.dtype, p.device,
                       None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()},
        "buffers": {n: (b, b.clone(), b.dtype, b.device) for n, b in model.named_buffers()},
    }  # fmt: skip


def assert_unchanged(before: dict, model: nn.Module, what: str) -> None:
    after = snapshot(model)
    modes = {n: (m, after["modes"].get(n)) for n, m in before["modes"].items() if after["modes"].get(n) != m}
    assert not modes and before["modes"].keys() == after["modes"].keys(), f"{what} changed modes: {modes}"
    assert before["params"].keys() == after["params"].keys(), f"{what} changed the parameter set"
    for n, (obj, value, grad_flag, dtype, device, grad) in before["params"].items():
        obj2, _, grad_flag2, dtype2, device2, grad2 = after["params"][n]
        assert obj2 is obj, f"{what} replaced parameter {n}"
        assert (grad_flag2, dtype2, device2) == (grad_flag, dtype, device), f"{what} changed {n}"
        assert torch.equal(obj2.detach(), value), f"{what} changed the values of {n}"
        assert (grad is None) == (grad2 is None) and (grad is None or torch.equal(grad, grad2)), f"{what}: grad {n}"
    assert before["buffers"].keys() == after["buffers"].keys(), f"{what} changed the buffer set"
    for n, (obj, value, dtype, device) in before["buffers"].items():
        obj2 = after["buffers"][n][0]
        assert obj2 is obj and obj2.dtype == dtype and obj2.device == device, f"{what} replaced buffer {n}"
        assert torch.equal(obj2, value), f"{what} changed buffer {n} (BN statistics?)"


def _fake_tensorrt():
    spec = importlib.util.spec_from_file_location("_fake_tensorrt_fault1", HERE / "export" / "fake_tensorrt.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.make_fake_tensorrt()


X = torch.randn(2, 3, 20, 20, generator=torch.Generator().manual_seed(1))


def _optimize(model, tmp_path, backend: str) -> None:
    if any(m.training for m in model.modules()):
        with pytest.raises(ValueError, match="training mode"):  # refused, with the reason: nothing touched
            unet_fast.optimize(model, X, backend=backend)
    fast = unet_fast.optimize(_eval_twin(model), X, backend=backend)
    fast(X)


def _eval_twin(model):
    """The same call on an eval-mode model is checked by the eval-mode parametrization; here only the
    training-mode refusal matters, so run the engine on a copy."""
    import copy

    return copy.deepcopy(model).eval()


def _to_onnx(model, tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from unet_fast.export.onnx import to_onnx

    r = to_onnx(model, tmp_path / "m.onnx", X)
    assert r.parity and all("error" not in p for p in r.parity)


def _onnx_parity_helpers(model, tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from unet_fast.export.onnx import onnxruntime_parity, parity_inputs, to_onnx
    from unet_fast.export.prepare import export_form, fold_batchnorm

    to_onnx(_eval_twin(model), tmp_path / "m.onnx", X, check_parity=False)
    onnxruntime_parity(tmp_path / "m.onnx", model, parity_inputs(model, X, ("batch",)))
    onnxruntime_parity(tmp_path / "m.onnx", model, [X], class_map=True)
    fold_batchnorm(model)
    fold_batchnorm(model, X)  # the verified fold runs the model and its copy
    export_form(model, X)


def _to_tensorrt(model, tmp_path, monkeypatch) -> None:
    pytest.importorskip("onnx")
    from unet_fast.export.tensorrt import to_tensorrt

    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt())
    to_tensorrt(model, tmp_path / "m.plan", example_input=X, precision="fp16")


def _bench(model, tmp_path) -> None:
    from unet_fast.bench.contenders import CONTENDERS, Settings
    from unet_fast.bench.reference import reference_output
    from unet_fast.bench.roofline import roofline
    from unet_fast.bench.runner import check_parity, prepare_for_device

    ref = reference_output(model, X)
    s = Settings("cpu", torch.float32, 1, tmp_path)
    ran = []
    for name in ("eager", "eager-cl", "onnxruntime", "openvino", "unet_fast-torch", "unet_fast-cpu"):
        c = CONTENDERS[name]
        if c.check(s):
            continue
        p = prepare_for_device(c, model, X, s)
        parity = check_parity(p, ref, 1)
        assert parity["rel_l2"] < 1e-3, f"{name} disagrees with the eval-mode reference: {parity}"
        ran.append(name)
    assert {"eager", "unet_fast-torch"} <= set(ran)
    # the bf16 comparison's own paths (bf16 channels_last copies, OpenVINO at its default precision, the cpu
    # backend's bf16 tiles with fp32 input)
    s16 = Settings("cpu", torch.bfloat16, 1, tmp_path / "bf16")
    for name in ("eager-cl", "openvino-default", "unet_fast-cpu"):
        c = CONTENDERS[name]
        if c.check(s16):
            continue
        parity = check_parity(prepare_for_device(c, model, X, s16), ref, 1)
        assert parity["rel_l2"] < 5e-2, f"{name} (bf16) disagrees with the eval-mode reference: {parity}"
    roofline(model, X[:1])


def _segment(model, tmp_path) -> None:
    import numpy as np

    from unet_fast.inference.model_card import ModelCard
    from unet_fast.inference.segmenter import Segmenter, make_runner

    card = ModelCard(config=model.config_dict(), mean=[0.5] * 3, std=[0.25] * 3, class_names=["a", "b", "c"],
                     patch_size=16)  # fmt: skip
    image = np.random.default_rng(0).random((21, 30, 3), dtype=np.float32)
    for backend in ("reference", "auto"):
        seg = Segmenter(model, card, backend=backend, batch_size=2)
        seg.segment(image)
    runner = make_runner(model, torch.randn(2, 3, 16, 16), "reference")
    runner.predict(torch.randn(2, 3, 16, 16))
    from unet_fast.inference.sliding_window import sliding_window_inference

    sliding_window_inference(torch.randn(1, 3, 21, 30), model, 16, batch_size=2)


ENTRY_POINTS: dict[str, Callable] = {
    "optimize(torch)": lambda m, t, mp: _optimize(m, t, "torch"),
    "optimize(cpu)": lambda m, t, mp: _optimize(m, t, "cpu"),
    "to_onnx": lambda m, t, mp: _to_onnx(m, t),
    "onnx parity helpers + fold_batchnorm": lambda m, t, mp: _onnx_parity_helpers(m, t),
    "to_tensorrt (mock)": lambda m, t, mp: _to_tensorrt(m, t, mp),
    "bench contenders + reference + roofline": lambda m, t, mp: _bench(m, t),
    "Segmenter + make_runner": lambda m, t, mp: _segment(m, t),
}


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_entry_point_leaves_the_model_exactly_as_it_was(entry: str, mode: str, tmp_path, monkeypatch) -> None:
    model = mixed_model()
    if mode == "eval":
        model.eval()
    before = snapshot(model)
    ENTRY_POINTS[entry](model, tmp_path, monkeypatch)
    assert_unchanged(before, model, entry)


def test_the_snapshot_sees_a_mode_change_and_a_bn_update() -> None:
    """The check itself: a training-mode forward (BN statistics) and .eval() are both caught."""
    model = mixed_model()
    before = snapshot(model)
    model(X)
    with pytest.raises(AssertionError, match="changed buffer"):
        assert_unchanged(before, model, "forward")
    model = mixed_model()
    before = snapshot(model)
    model.eval()
    with pytest.raises(AssertionError, match="changed modes"):
        assert_unchanged(before, model, "eval()")
    model = mixed_model()
    before = snapshot(model)
    next(model.parameters()).requires_grad_(True)
    with pytest.raises(AssertionError, match="changed"):
        assert_unchanged(before, model, "requires_grad")
