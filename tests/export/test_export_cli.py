"""`unet-fast export onnx|tensorrt`."""

from __future__ import annotations

import pytest

from unet_fast.cli import main
from unet_fast.export.tensorrt import tensorrt_version

pytest.importorskip("onnx", reason="onnx is not installed (pip install 'unet_fast[export]')")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'unet_fast[export]')")

from unet_fast.export import read_metadata

SMALL = ["--base-channels", "4", "--depth", "2", "--input-shape", "1,3,32,32"]


def test_export_onnx_prints_parity(tmp_path, capsys) -> None:
    out = tmp_path / "m.onnx"
    rc = main(
        ["export", "onnx", "--out", str(out), *SMALL, "--upsample", "bilinear", "--align-corners", "false"]
    )
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert f"wrote {out}" in printed and "random weights" in printed
    rows = [line for line in printed.splitlines() if "vs PyTorch" in line]
    assert len(rows) == 3 and all("max_abs=" in r and "rel_l2=" in r for r in rows)  # example + 2 other sizes
    meta = read_metadata(out)
    assert meta["source_model"]["config"]["upsample"] == "bilinear"
    assert meta["source_model"]["config"]["align_corners"] is False


def test_export_onnx_class_map_static(tmp_path, capsys) -> None:
    out = tmp_path / "m.onnx"
    assert (
        main(["export", "onnx", "--out", str(out), *SMALL, "--static", "--class-map", "--model", "unet"]) == 0
    )
    meta = read_metadata(out)
    assert meta["export"]["class_map"] is True and meta["export"]["dynamic"] == []
    assert len(meta["parity"]) == 1 and meta["parity"][0]["argmax_agreement"] == 1.0


def test_bad_inputs_exit_2(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["export", "onnx", "--out", str(tmp_path / "m.onnx"), "--input-shape", "1,3,32"])
    assert e.value.code == 2
    rc = main(["export", "onnx", "--out", str(tmp_path / "m.onnx"), "--base-channels", "4", "--depth", "2",
               "--input-shape", "1,1,32,32"])  # fmt: skip
    assert rc == 2 and "the model takes 3" in capsys.readouterr().err


def test_export_tensorrt_without_tensorrt_says_why(tmp_path, capsys) -> None:
    if tensorrt_version() is not None:
        pytest.skip("TensorRT is installed here")
    rc = main(["export", "tensorrt", "--out", str(tmp_path / "m.plan"), "--base-channels", "4", "--depth", "2",
               "--opt-shape", "1,3,32,32"])  # fmt: skip
    assert rc == 1 and "TensorRT is not installed" in capsys.readouterr().err


def test_export_onnx_fp16(tmp_path, capsys) -> None:
    out = tmp_path / "h.onnx"
    assert main(["export", "onnx", "--out", str(out), *SMALL, "--fp16"]) == 0, capsys.readouterr().err
    assert read_metadata(out)["export"]["precision"] == "fp16"
