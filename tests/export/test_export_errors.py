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


def test_exporter_failure_is_an_export_error_and_keeps_the_old_file(tmp_path, monkeypatch) -> None:
    """A failure inside torch.onnx.export (here simulated: it has many, e.g. SymbolicValueError, an OnnxExporterError) is our
    ExportError naming the step, with torch's exception as its cause; the file already at `path` stays."""
    from unet_fast.export import ExportError

    path = tmp_path / "m.onnx"
    path.write_bytes(b"the caller's previous export")

    def broken(*args, **kwargs):
        raise torch.onnx.errors.OnnxExporterError("Unsupported: ONNX export of something")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(ExportError, match=r"torch\.onnx\.export .* cannot export UNetExportForm: Unsupported") as e:
        to_onnx(small_unet(), path, torch.randn(1, 3, 16, 16))
    assert isinstance(e.value.__cause__, torch.onnx.errors.OnnxExporterError)
    assert path.read_bytes() == b"the caller's previous export" and [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_cli_export_error_is_exit_1_in_one_line(tmp_path, monkeypatch, capsys) -> None:
    from unet_fast.cli import main

    def broken(*args, **kwargs):
        raise RuntimeError("deep inside the tracer\nsecond line of a long trace")

    monkeypatch.setattr(torch.onnx, "export", broken)
    out = tmp_path / "m.onnx"
    rc = main(["export", "onnx", "--out", str(out), "--base-channels", "4", "--depth", "2", "--input-shape", "1,3,32,32"])
    err = capsys.readouterr().err
    assert rc == 1 and not out.exists()
    assert "unet-fast export onnx: error: torch.onnx.export" in err and "deep inside the tracer" in err
    assert "Traceback" not in err and "second line" not in err


class ShapeError(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).view(1, 2, 16, 16)  # only batch 1 at 16x16


def test_foreign_model_refusing_the_example_is_a_value_error(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"cannot run on the example input \(2, 3, 16, 16\): RuntimeError"):
        to_onnx(ShapeError().eval(), tmp_path / "m.onnx", torch.randn(2, 3, 16, 16))
    # at its one size it exports; the probes at other sizes are refused by the model itself: recorded as
    # not checked (nothing to compare), not failures
    r = to_onnx(ShapeError().eval(), tmp_path / "m.onnx", torch.randn(1, 3, 16, 16))
    assert r.metadata["parity_ok"] and len(r.parity) == 3
    assert all("the model does not take this size (RuntimeError" in p["skipped"] for p in r.parity[1:])
    assert "not checked: the model does not take this size" in r.summary()
