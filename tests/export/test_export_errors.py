"""Bad input to the ONNX export: clear errors that say what was expected (and name the layer)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from export_helpers import small_unet
from torch import nn

pytest.importorskip("onnx", reason="onnx is not installed (pip install 'unet_fast[export]')")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'unet_fast[export]')")

from unet_fast.export import read_metadata, to_onnx


class Antialiased(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", antialias=True)


class WithBadLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        self.decoder = nn.Sequential(nn.ReLU(), Antialiased())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.conv(x))


def test_unsupported_layer_is_named(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"layer decoder\.1 \(Antialiased\).*_upsample_bilinear2d_aa"):
        to_onnx(WithBadLayer().eval(), tmp_path / "m.onnx", torch.randn(1, 3, 8, 8))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"opset": 16}, "opset must be >= 17"),
        ({"dynamic": ("batch", "depth")}, r"subset of \('batch', 'height', 'width'\)"),
        ({"example_input": torch.randn(3, 32, 32)}, "4-D floating-point"),
        ({"example_input": torch.zeros(1, 3, 32, 32, dtype=torch.int64)}, "4-D floating-point"),
        ({"example_input": torch.randn(1, 3, 5, 32)}, "cannot take an input height of 5"),
        ({"example_input": torch.randn(1, 5, 32, 32)}, "expects 3 input channels"),
    ],
    ids=["opset", "axis", "3d", "int", "size", "channels"],
)
def test_bad_arguments(kwargs: dict, match: str, tmp_path) -> None:
    args = {"example_input": torch.randn(1, 3, 32, 32), **kwargs}
    with pytest.raises(ValueError, match=match):
        to_onnx(small_unet(depth=3), tmp_path / "m.onnx", **args)
    assert not (tmp_path / "m.onnx").exists()


def test_one_channel_class_map_needs_a_threshold_for_unknown_models(tmp_path) -> None:
    model = nn.Conv2d(3, 1, 1).eval()
    with pytest.raises(ValueError, match="class_map_threshold"):
        to_onnx(model, tmp_path / "m.onnx", torch.randn(1, 3, 8, 8), class_map=True)
    to_onnx(model, tmp_path / "m.onnx", torch.randn(1, 3, 8, 8), class_map=True, class_map_threshold=0.0)


def test_model_must_return_one_map(tmp_path) -> None:
    class Two(nn.Module):
        def forward(self, x):
            return x, x

    with pytest.raises(ValueError, match=r"one \(N, classes, H, W\) tensor"):
        to_onnx(Two(), tmp_path / "m.onnx", torch.randn(1, 3, 8, 8))


def test_read_metadata_of_missing_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no ONNX file"):
        read_metadata(tmp_path / "nope.onnx")
