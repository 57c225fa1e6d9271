"""TensorRT, for real: build an engine for small U-Nets and compare it with PyTorch. Needs the tensorrt
package and a CUDA device; skips with the reason otherwise (TensorRT cannot be installed on the CI
machines, so these run only on a GPU machine that has it)."""

from __future__ import annotations

import pytest
import torch
from export_helpers import small_unet

from unet_fast.export.tensorrt import TensorRTModule, TensorRTUnavailable, tensorrt_version, to_tensorrt
from unet_fast.kernels.spec import TOLERANCES
from unet_fast.parity import assert_parity


def _tensorrt_or_skip() -> None:
    if tensorrt_version() is None:
        pytest.skip("TensorRT is not installed (its wheels need NVIDIA libraries these machines cannot get)")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (none visible to torch)")


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("upsample", ["transpose", "bilinear", "nearest"])
def test_engine_matches_pytorch_inside_the_profile(precision: str, upsample: str, tmp_path) -> None:
    _tensorrt_or_skip()
    model = small_unet(num_classes=3, upsample=upsample, align_corners=False, base_channels=8, depth=3)
    build = to_tensorrt(model, tmp_path / "m.plan", example_input=torch.randn(1, 3, 64, 64),
                        precision=precision, min_shape=(1, 3, 32, 32), opt_shape=(2, 3, 64, 64),
                        max_shape=(4, 3, 96, 96), workspace=1 << 28, timing_cache=tmp_path / "cache.bin")  # fmt: skip
    assert build.engine.is_file() and (tmp_path / "cache.bin").is_file()
    if precision == "fp16":
        assert build.info.fp32_layers, "the softmax head must be pinned to fp32"
    trt_model = TensorRTModule(build.engine)
    # fp32 allows TF32 convolutions inside TensorRT: compare at the fp16 budget, the stricter one for fp16.
    atol, rtol = TOLERANCES[torch.float16]
    for shape in [(1, 3, 32, 32), (3, 3, 72, 40), (4, 3, 96, 96), (2, 3, 37, 53)]:
        x = torch.randn(shape, device="cuda")
        with torch.no_grad():
            ref = model.cuda()(x)
        out = trt_model(x)
        assert_parity(
            ref, out.float(), max_abs=atol * 5, rel_l2=rtol, min_agreement=0.999, what=f"{precision} {shape}"
        )

    with pytest.raises(ValueError, match="outside the engine's optimization profile"):
        trt_model(torch.randn(5, 3, 64, 64, device="cuda"))


@pytest.mark.gpu
def test_cuda_graph_replay_and_class_map(tmp_path) -> None:
    _tensorrt_or_skip()
    from unet_fast.export.onnx import to_onnx

    model = small_unet(num_classes=3, upsample="bilinear", base_channels=8, depth=3)
    onnx_path = to_onnx(model, tmp_path / "m.onnx", torch.randn(1, 3, 64, 64), class_map=True).path
    build = to_tensorrt(onnx_path, tmp_path / "m.plan", opt_shape=(1, 3, 64, 64), max_shape=(2, 3, 64, 64),
                        precision="fp32")  # fmt: skip
    trt_model = TensorRTModule(build.engine, cuda_graph=True)
    for shape in [(1, 3, 64, 64), (1, 3, 64, 64), (2, 3, 64, 64)]:
        x = torch.randn(shape, device="cuda")
        out = trt_model(x)
        assert out.dtype == torch.int32
        with torch.no_grad():
            expect = model.cuda()(x).argmax(1).to(torch.int32)
        assert_parity(expect, out, min_agreement=0.999, what="class map")


@pytest.mark.gpu
def test_engine_from_another_version_and_corrupt_engine(tmp_path) -> None:
    _tensorrt_or_skip()
    import json

    build = to_tensorrt(
        small_unet(), tmp_path / "m.plan", example_input=torch.randn(1, 3, 32, 32), precision="fp32"
    )
    side = tmp_path / "m.plan.json"
    info = json.loads(side.read_text())
    side.write_text(json.dumps({**info, "tensorrt": "9.0.0"}))
    with pytest.raises(ValueError, match=r"built by TensorRT 9\.0\.0"):
        TensorRTModule(build.engine)
    side.unlink()
    blob = bytearray(build.engine.read_bytes())
    (tmp_path / "bad.plan").write_bytes(bytes(blob[: len(blob) // 3]))
    with pytest.raises(ValueError, match="not a TensorRT engine"):
        TensorRTModule(tmp_path / "bad.plan")


def test_clear_error_without_tensorrt(tmp_path) -> None:
    if tensorrt_version() is not None:
        pytest.skip("TensorRT is installed here")
    with pytest.raises(TensorRTUnavailable, match="TensorRT is not installed"):
        to_tensorrt(small_unet(), tmp_path / "m.plan", example_input=torch.randn(1, 3, 32, 32))
    (tmp_path / "e.plan").write_bytes(b"x")
    with pytest.raises(TensorRTUnavailable, match="TensorRT is not installed"):
        TensorRTModule(tmp_path / "e.plan")


def test_missing_and_empty_engine_files(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no TensorRT engine"):
        TensorRTModule(tmp_path / "nope.plan")
    (tmp_path / "empty.plan").write_bytes(b"")
    with pytest.raises(ValueError, match="is empty"):
        TensorRTModule(tmp_path / "empty.plan")
    with pytest.raises(FileNotFoundError, match="no ONNX file"):
        to_tensorrt(tmp_path / "nope.onnx", tmp_path / "m.plan", opt_shape=(1, 3, 32, 32))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"precision": "fp8"}, "precision must be one of"),
        ({"workspace": 0}, "workspace must be"),
        ({"min_shape": (2, 3, 32, 32), "opt_shape": (1, 3, 32, 32)}, "min <= opt <= max"),
        ({"opt_shape": (1, 3, 32, 32), "max_shape": (1, 4, 32, 32)}, "channel count is fixed"),
        ({"opt_shape": (1, 3, 32)}, "4 positive ints"),
        ({}, "give opt_shape or example_input"),
    ],
    ids=["precision", "workspace", "order", "channels", "rank", "no-shape"],
)
def test_bad_build_arguments_fail_before_tensorrt(kwargs: dict, match: str, tmp_path) -> None:
    with pytest.raises(ValueError, match=match):
        to_tensorrt(small_unet(), tmp_path / "m.plan", **kwargs)
