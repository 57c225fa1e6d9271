"""The TensorRT builder and runtime module against a MOCK of the tensorrt package (fake_tensorrt.py):
control flow only (profiles, precision flags, fp32 pinning, timing cache, sidecar checks, error paths).
Nothing here builds or runs a real engine; test_export_tensorrt.py does that where TensorRT exists."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from export_helpers import small_unet
from fake_tensorrt import OnnxParser, make_fake_tensorrt

pytest.importorskip("onnx", reason="onnx is not installed (pip install 'unet_fast[export]')")

from unet_fast.export.onnx import to_onnx
from unet_fast.export.tensorrt import TensorRTModule, to_tensorrt


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    """One small softmax U-Net (bilinear up) exported once for every mock build."""
    path = tmp_path_factory.mktemp("onnx") / "unet.onnx"
    to_onnx(small_unet(upsample="bilinear"), path, torch.randn(1, 3, 32, 32), check_parity=False)
    return path


@pytest.fixture
def trt(monkeypatch):
    fake = make_fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    return fake


SHAPES = {"min_shape": (1, 3, 32, 32), "opt_shape": (2, 3, 64, 64), "max_shape": (4, 3, 128, 96)}


def test_fp16_build_sets_profile_workspace_flags_and_pins_softmax(trt, onnx_file, tmp_path) -> None:
    build = to_tensorrt(onnx_file, tmp_path / "m.plan", precision="fp16", workspace=123456, **SHAPES)
    config, network = trt.last_config, trt.last_network
    assert config.flags == {"FP16", "PREFER_PRECISION_CONSTRAINTS"}
    assert config.pools == {trt.MemoryPoolType.WORKSPACE: 123456}
    (profile,) = config.profiles
    assert profile.shapes == {"input": ([1, 3, 32, 32], [2, 3, 64, 64], [4, 3, 128, 96])}
    softmax = [layer for layer in network.layers if layer.type == trt.LayerType.SOFTMAX]
    assert softmax and all(
        layer.precision == trt.float32 and layer.output_types == {0: trt.float32} for layer in softmax
    )
    others = [layer for layer in network.layers if layer.type != trt.LayerType.SOFTMAX]
    assert all(layer.precision is None for layer in others), "only softmax/norm/reduce layers are pinned"
    assert build.info.fp32_layers == [layer.name for layer in softmax]
    side = json.loads((tmp_path / "m.plan.json").read_text())
    assert side["tensorrt"] == "10.13.0.35" and side["precision"] == "fp16"
    assert side["profile"] == {"min": [1, 3, 32, 32], "opt": [2, 3, 64, 64], "max": [4, 3, 128, 96]}
    assert (tmp_path / "m.plan").read_bytes().startswith(b"MOCKENGINE")


@pytest.mark.parametrize(
    ("precision", "keep", "flags"),
    [
        ("fp32", True, set()),
        ("fp16", False, {"FP16"}),
        ("bf16", True, {"BF16", "PREFER_PRECISION_CONSTRAINTS"}),
    ],
)
def test_precision_flags(trt, onnx_file, tmp_path, precision: str, keep: bool, flags: set) -> None:
    build = to_tensorrt(onnx_file, tmp_path / "m.plan", precision=precision, keep_fp32=keep, **SHAPES)
    assert trt.last_config.flags == flags
    assert bool(build.info.fp32_layers) == bool(flags and keep)


def test_int8_needs_a_calibrator(trt, onnx_file, tmp_path) -> None:
    with pytest.raises(ValueError, match="int8_calibrator"):
        to_tensorrt(onnx_file, tmp_path / "m.plan", precision="int8", **SHAPES)
    calibrator = object()
    to_tensorrt(onnx_file, tmp_path / "m.plan", precision="int8", int8_calibrator=calibrator, **SHAPES)
    assert {"INT8", "FP16"} <= trt.last_config.flags and trt.last_config.int8_calibrator is calibrator


@pytest.mark.parametrize("version", ["11.4.0.106", "10.13.0.35"])
def test_strongly_typed_fp16_builds_from_a_half_graph(monkeypatch, onnx_file, tmp_path, version: str) -> None:
    """TensorRT 11 (no precision flags) picks strongly typed by itself; TensorRT 10 when asked."""
    eleven = version.startswith("11")
    trt = make_fake_tensorrt(version, strongly_typed_only=eleven)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    build = to_tensorrt(onnx_file, tmp_path / "m.plan", precision="fp16", strongly_typed=None if eleven else True,
                        **SHAPES)  # fmt: skip
    assert trt.last_network.flags == 1 << trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED.value
    assert trt.last_config.flags == set(), "no weak-typing precision flags in a strongly typed build"
    assert build.onnx == tmp_path / "m.fp16.onnx" and build.info.strongly_typed
    assert 10 in trt.last_network.initializer_types, "the parsed graph must carry fp16 weights"
    assert build.info.fp32_layers == ["/Softmax"]
    for precision in ("bf16", "int8"):
        with pytest.raises(ValueError, match=f"precision='{precision}' needs a weakly typed build"):
            to_tensorrt(onnx_file, tmp_path / "m.plan", precision=precision, strongly_typed=True, **SHAPES)


def test_weakly_typed_flag_missing_is_a_clear_error(monkeypatch, onnx_file, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt("11.4.0.106", strongly_typed_only=True))
    with pytest.raises(ValueError, match=r"has no BuilderFlag\.FP16"):
        to_tensorrt(onnx_file, tmp_path / "m.plan", precision="fp16", strongly_typed=False, **SHAPES)


def test_timing_cache_is_read_and_written(trt, onnx_file, tmp_path) -> None:
    cache = tmp_path / "timing.cache"
    to_tensorrt(onnx_file, tmp_path / "a.plan", timing_cache=cache, **SHAPES)
    assert trt.last_config.cache_inputs == [b""] and cache.read_bytes() == b"|timed"
    to_tensorrt(onnx_file, tmp_path / "b.plan", timing_cache=cache, **SHAPES)
    assert trt.last_config.cache_inputs == [b"|timed"] and cache.read_bytes() == b"|timed|timed"
    trt.reject_timing_cache = True
    with pytest.raises(ValueError, match=r"timing cache .* does not match"):
        to_tensorrt(onnx_file, tmp_path / "c.plan", timing_cache=cache, **SHAPES)


def test_parser_error_names_the_node(trt, onnx_file, tmp_path) -> None:
    OnnxParser.reject_ops = {"Resize"}
    with pytest.raises(
        ValueError, match=r"parser rejected .*node '/ups\.0/Resize' \(Resize\): mock: unsupported"
    ):
        to_tensorrt(onnx_file, tmp_path / "m.plan", **SHAPES)
    assert not (tmp_path / "m.plan").exists()


def test_build_failure_carries_tensorrts_message(trt, onnx_file, tmp_path) -> None:
    trt.fail_build = True
    with pytest.raises(RuntimeError, match=r"could not build.*no implementation for layer /head/Conv"):
        to_tensorrt(onnx_file, tmp_path / "m.plan", **SHAPES)


def test_static_onnx_axis_cannot_take_a_dynamic_profile(trt, tmp_path) -> None:
    static = to_onnx(
        small_unet(), tmp_path / "s.onnx", torch.randn(1, 3, 32, 32), dynamic=(), check_parity=False
    )
    with pytest.raises(ValueError, match=r"static size 1 on axis 0 but the profile spans 1\.\.4"):
        to_tensorrt(static.path, tmp_path / "m.plan", **SHAPES)
    to_tensorrt(static.path, tmp_path / "m.plan", opt_shape=(1, 3, 32, 32))  # the static shape itself is fine


def test_model_input_is_exported_first(trt, tmp_path) -> None:
    build = to_tensorrt(
        small_unet(), tmp_path / "m.plan", example_input=torch.randn(1, 3, 32, 32), precision="fp32"
    )
    assert build.onnx == tmp_path / "m.onnx" and build.onnx.is_file()
    assert trt.last_config.profiles[0].shapes["input"] == ([1, 3, 32, 32],) * 3


# -- runtime module -----------------------------------------------------------------------------------


@pytest.fixture
def engine(trt, onnx_file, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the MOCK runtime needs no device
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "mock GPU")
    return to_tensorrt(onnx_file, tmp_path / "m.plan", **SHAPES).engine


def test_module_reads_io_and_profile(trt, engine) -> None:
    m = TensorRTModule(engine)
    assert (m.input_name, m.output_name) == ("input", "output")
    assert m.input_dtype == torch.float32 and m.output_dtype == torch.float32
    assert (m.profile.min, m.profile.max) == ((1, 3, 32, 32), (4, 3, 128, 96))
    out = m._bind(torch.randn(3, 3, 40, 56))  # binding works on any tensor; enqueue needs CUDA
    assert out.shape == (3, 3, 40, 56)
    assert m._context.shapes == {"input": (3, 3, 40, 56)}
    assert m._context.addresses["output"] == out.data_ptr()


@pytest.mark.parametrize("shape", [(5, 3, 64, 64), (1, 3, 16, 64), (1, 3, 64, 100), (1, 4, 64, 64)])
def test_shape_outside_the_profile_is_a_clear_error(trt, engine, shape) -> None:
    m = TensorRTModule(engine)
    with pytest.raises(
        ValueError, match=r"outside the engine's optimization profile \(min \(1, 3, 32, 32\), max"
    ):
        m(torch.randn(shape))


def test_cpu_tensor_is_refused(trt, engine) -> None:
    with pytest.raises(ValueError, match="runs on CUDA tensors"):
        TensorRTModule(engine)(torch.randn(1, 3, 32, 32))


def test_engine_from_another_tensorrt_is_refused_before_deserializing(trt, engine) -> None:
    side = engine.with_name(engine.name + ".json")
    side.write_text(json.dumps({**json.loads(side.read_text()), "tensorrt": "10.3.0"}))
    with pytest.raises(ValueError, match=r"built by TensorRT 10\.3\.0, this is TensorRT 10\.13\.0\.35"):
        TensorRTModule(engine)
    assert trt.deserialized == 0, "must be refused before TensorRT reads the blob"


def test_engine_for_another_gpu_is_refused(trt, engine, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 0))
    with pytest.raises(ValueError, match=r"compute capability \(9, 0\) \(mock GPU\), this GPU is \(8, 0\)"):
        TensorRTModule(engine)


def test_corrupt_engine(trt, engine) -> None:
    engine.with_name(engine.name + ".json").unlink()
    engine.write_bytes(b"garbage" + engine.read_bytes())
    with pytest.raises(ValueError, match=r"not a TensorRT engine this TensorRT .* can load.*magicTagRead"):
        TensorRTModule(engine)


def test_cli_export_tensorrt_with_the_mock(trt, onnx_file, tmp_path, capsys) -> None:
    from unet_fast.cli import main

    out = tmp_path / "cli.plan"
    rc = main(["export", "tensorrt", "--onnx", str(onnx_file), "--out", str(out), "--precision", "fp16",
               "--min-shape", "1,3,32,32", "--opt-shape", "1,3,64,64", "--max-shape", "2,3,96,96",
               "--workspace", "4096", "--timing-cache", str(tmp_path / "t.cache")])  # fmt: skip
    printed = capsys.readouterr().out
    assert (
        rc == 0
        and f"wrote {out} (TensorRT 10.13.0.35, fp16" in printed
        and "fp32-pinned layers: 1" in printed
    )
    assert trt.last_config.pools == {trt.MemoryPoolType.WORKSPACE: 4096}
    assert (tmp_path / "t.cache").is_file()
