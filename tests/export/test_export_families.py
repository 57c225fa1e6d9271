"""ONNX export of the other U-Net families the engine takes: milesial's Pytorch-UNet layout, a stand-in for
segmentation_models_pytorch.Unet(resnet34) (tests/models/smp_like.py), and the real smp where importable.
onnxruntime (CPU) against PyTorch on random inputs, at the example size and others, batch > 1."""

from __future__ import annotations

import pytest
import torch
from export_helpers import FP32_ATOL, FP32_RTOL, load_test_model, ort_run
from torch import nn

from unet_fast.export.report import lively_weights

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install 'unet_fast[export]')")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'unet_fast[export]')")

from unet_fast.export import to_onnx  # noqa: E402


def _check(model: nn.Module, tmp_path, example: tuple, others: list[tuple]) -> dict:
    model = lively_weights(model)
    result = to_onnx(model, tmp_path / "m.onnx", torch.randn(example), check_parity=False)
    g = torch.Generator().manual_seed(3)
    for shape in [example, *others]:
        x = torch.randn(shape, generator=g)
        with torch.no_grad():
            ref = model(x)
        got = ort_run(result.path, x)
        assert got.shape == ref.shape, f"{shape}: onnx {tuple(got.shape)} vs torch {tuple(ref.shape)}"
        torch.testing.assert_close(
            got, ref, atol=FP32_ATOL, rtol=FP32_RTOL, msg=lambda m, s=shape: f"{s}: {m}"
        )
    return result.metadata


@pytest.mark.parametrize("bilinear", [False, True], ids=["transpose", "bilinear"])
def test_milesial_unet(bilinear: bool, tmp_path) -> None:
    torch.manual_seed(0)
    model = load_test_model("milesial_unet").MilesialUNet(3, 2, bilinear=bilinear, base=4)
    meta = _check(model, tmp_path, (1, 3, 32, 32), [(2, 3, 48, 64), (1, 3, 37, 53)])  # odd: F.pad path
    assert meta["export"]["bn_folded"] == 18 and not meta["export"]["bn_left"]
    if bilinear:
        assert {r["coordinate_transformation_mode"] for r in meta["export"]["resize"]} == {"align_corners"}


def test_smp_like_resnet34(tmp_path) -> None:
    torch.manual_seed(0)
    model = load_test_model("smp_like").SmpLikeUnet("resnet34", classes=3, decoder_channels=(16, 8, 8, 4, 4))
    # smp >= 0.6 takes any H/W (upsampling to each skip's size): an odd size exercises size-driven Resize.
    meta = _check(model, tmp_path, (1, 3, 64, 64), [(2, 3, 96, 64), (1, 3, 45, 71)])
    assert {r["mode"] for r in meta["export"]["resize"]} == {"nearest"}
    assert meta["export"]["bn_folded"] >= 40  # the decoder's Conv2dReLU and the ResNet blocks (fx per block)


def test_real_smp_unet(tmp_path) -> None:
    smp = pytest.importorskip(
        "segmentation_models_pytorch",
        reason="segmentation_models_pytorch is not installed (no torchvision here)",
    )
    torch.manual_seed(0)
    model = smp.Unet("resnet34", encoder_weights=None, classes=2, decoder_channels=(16, 8, 8, 4, 4))
    _check(model, tmp_path, (1, 3, 64, 64), [(2, 3, 96, 64)])
