"""`unet-fast export onnx|tensorrt`."""

from __future__ import annotations

import pytest
import torch
from export_helpers import lively, load_test_model, ort_run

from unet_fast import UNet
from unet_fast.cli import main
from unet_fast.export.tensorrt import tensorrt_version
from unet_fast.parity import compare

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


# --- the model comes from the weights (issue 12, fault 7) ---------------------------------------------


def _export_and_run(args: list[str], capsys) -> tuple[int, str, str]:
    rc = main(["export", "onnx", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_weights_read_the_model_card_beside_them(tmp_path, capsys) -> None:
    """The issue's case: --weights demo_unet.pt failed with 104 key errors (3-channel default UNet)."""
    import shutil

    from unet_fast.demo import bundled
    from unet_fast.inference.model_card import load_model

    weights = tmp_path / "demo_unet.pt"
    shutil.copy(bundled.require(bundled.DEMO_WEIGHTS), weights)
    shutil.copy(bundled.require(bundled.DEMO_WEIGHTS).with_suffix(".json"), tmp_path / "demo_unet.json")
    out = tmp_path / "demo.onnx"
    rc, printed, err = _export_and_run(["--weights", str(weights), "--out", str(out), "--static"], capsys)
    assert rc == 0, err
    assert "from the model card" in printed and "1 -> 5 classes" in printed
    meta = read_metadata(out)
    assert meta["export"]["example_shape"] == [1, 1, 128, 128], "channels from the model, size from the card"
    assert meta["parity_ok"]
    model, _ = load_model(weights)
    x = torch.randn(1, 1, 128, 128)
    with torch.no_grad():
        assert compare(model(x), ort_run(out, x)).rel_l2 < 1e-5


def test_options_that_disagree_with_the_card_are_named(tmp_path, capsys) -> None:
    from unet_fast.demo import bundled

    weights = str(bundled.require(bundled.DEMO_WEIGHTS))
    rc, _, err = _export_and_run(["--weights", weights, "--out", str(tmp_path / "m.onnx"), "--in-channels", "3",
                                  "--classes", "5"], capsys)  # fmt: skip
    assert rc == 2 and "--in-channels 3 (it says 1)" in err and "--classes" not in err
    rc, _, err = _export_and_run(["--card", str(tmp_path / "nope.json"), "--out", str(tmp_path / "m.onnx")], capsys)
    assert rc == 2 and "give --weights too" in err


def test_weights_without_a_card_say_how_to_describe_the_model(tmp_path, capsys) -> None:
    torch.save(UNet(1, 2, 4, 2).state_dict(), tmp_path / "w.pt")
    rc, _, err = _export_and_run(["--weights", str(tmp_path / "w.pt"), "--out", str(tmp_path / "m.onnx")], capsys)
    assert rc == 2 and "missing keys" in err and "No model card beside the weights" in err
    rc, _, err = _export_and_run(["--weights", str(tmp_path / "w.pt"), "--out", str(tmp_path / "m.onnx"),
                                  "--in-channels", "1", "--base-channels", "4", "--depth", "2"], capsys)  # fmt: skip
    assert rc == 0, err


@pytest.mark.parametrize(("options", "shape"), [
    (["--in-channels", "1", "--base-channels", "4", "--depth", "2"], [1, 1, 256, 256]),  # the case
    # valid padding, depth 4: sizes 16k + 124 (572 = 16 * 28 + 124); the first >= 256 is 268
    (["--padding", "valid", "--base-channels", "4"], [1, 3, 268, 268]),
    (["--model", "original"], [1, 1, 268, 268]),
], ids=["in-channels", "valid", "original-preset"])  # fmt: skip
def test_input_shape_is_derived_from_the_model(options, shape, tmp_path, capsys) -> None:
    out = tmp_path / "m.onnx"
    rc, _, err = _export_and_run(["--out", str(out), "--static", "--no-parity", *options], capsys)
    assert rc == 0, err
    assert read_metadata(out)["export"]["example_shape"] == shape


def test_options_a_preset_does_not_take_are_refused(tmp_path, capsys) -> None:
    rc, _, err = _export_and_run(["--model", "original", "--base-channels", "4", "--out", str(tmp_path / "m.onnx")],
                                 capsys)  # fmt: skip
    assert rc == 2 and "--base-channels: options of our configurable UNet" in err


@pytest.mark.parametrize("bilinear", [False, True], ids=["transpose", "bilinear"])
def test_milesial_checkpoint_exports_what_milesial_computes(bilinear: bool, tmp_path, capsys) -> None:
    milesial = load_test_model("milesial_unet")
    torch.manual_seed(0)
    model = lively(milesial.MilesialUNet(1, 3, bilinear=bilinear, base=4), 0)
    ckpt = tmp_path / "checkpoint_epoch5.pth"
    torch.save({**model.state_dict(), "mask_values": [0, 1, 2]}, ckpt)  # what milesial's train.py writes
    out = tmp_path / "m.onnx"
    rc, printed, err = _export_and_run(["--model", "milesial", "--weights", str(ckpt), "--out", str(out),
                                        "--input-shape", "1,1,64,64"], capsys)  # fmt: skip
    assert rc == 0, err
    assert f"1 -> 3 classes, base 4, depth 4, {'bilinear' if bilinear else 'transpose'} up" in printed
    for shape in [(1, 1, 64, 64), (2, 1, 45, 83)]:
        x = torch.randn(shape)
        with torch.no_grad():
            assert compare(model(x), ort_run(out, x)).rel_l2 < 1e-5


def test_smp_family(tmp_path, capsys) -> None:
    try:
        import segmentation_models_pytorch  # noqa: F401
    except Exception:
        rc, _, err = _export_and_run(["--model", "smp", "--out", str(tmp_path / "m.onnx")], capsys)
        assert rc == 2 and "segmentation_models_pytorch" in err and "pip install segmentation-models-pytorch" in err
        return
    rc, printed, err = _export_and_run(["--model", "smp", "--encoder", "resnet18", "--out", str(tmp_path / "m.onnx"),
                                        "--input-shape", "1,3,64,64"], capsys)  # fmt: skip
    assert rc == 0 and "smp.Unet('resnet18')" in printed, err


def test_cli_families_are_the_library_families() -> None:
    from unet_fast.commands import export as command
    from unet_fast.export.sources import FAMILIES

    assert command.FAMILIES == FAMILIES
