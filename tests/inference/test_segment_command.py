"""`unet-fast segment` on small random models: inputs (files, folders, globs, .npy), outputs, exit codes."""

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_unet import CONFIG, save_tiny_unet

from unet_fast import UNet
from unet_fast.cli import main
from unet_fast.inference import segmenter as segmenter_module
from unet_fast.inference.batch import output_names
from unet_fast.inference.image_io import read_image
from unet_fast.inference.model_card import ModelCard
from unet_fast.inference.segmenter import Segmenter, make_runner
from unet_fast.inference.sliding_window import sliding_window_inference


@pytest.fixture
def tiny_model(tmp_path):
    """A random 3-class U-Net saved as weights + card (patch 32), and a folder with three images."""
    save_tiny_unet(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (45, 70), dtype=np.uint8)).save(images / "gray.png")
    Image.fromarray(rng.integers(0, 256, (20, 33, 3), dtype=np.uint8)).save(images / "rgb.png")
    np.save(images / "array.npy", rng.random((40, 40), dtype=np.float32))
    return tmp_path


def args(root, *extra: str) -> list[str]:
    return ["segment", "--weights", str(root / "tiny.pt"), "--out", str(root / "out"), "--quiet",
            "--backend", "reference", *extra]  # fmt: skip


def test_folder_writes_masks_equal_to_the_reference(tiny_model, capsys) -> None:
    assert main(args(tiny_model, str(tiny_model / "images"))) == 0
    assert "wrote 6 files for 3 image(s)" in capsys.readouterr().out
    model = UNet(**CONFIG).load_weights(tiny_model / "tiny.pt").eval()
    for name, suffix in (("gray", ".png"), ("rgb", ".png"), ("array", ".npy")):
        image = read_image(tiny_model / "images" / f"{name}{suffix}")
        gray = image if image.shape[2] == 1 else image @ np.array([0.299, 0.587, 0.114], np.float32)
        x = torch.from_numpy((gray.reshape(*image.shape[:2], 1) - 0.4) / 0.25).permute(2, 0, 1)[None]
        expected = sliding_window_inference(x.float(), model, 32, overlap=0.5).argmax(1)[0].numpy()
        with Image.open(tiny_model / "out" / f"{name}_mask.png") as im:
            assert im.mode == "P" and im.size == (image.shape[1], image.shape[0])
            np.testing.assert_array_equal(np.array(im), expected)
        with Image.open(tiny_model / "out" / f"{name}_overlay.png") as im:
            assert im.mode == "RGB" and im.size == (image.shape[1], image.shape[0])


def test_glob_and_progress(tiny_model, capsys) -> None:
    argv = [a for a in args(tiny_model, str(tiny_model / "images" / "*.png")) if a != "--quiet"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "runs on: reference PyTorch model" in err and "2/2" in err
    assert sorted(p.name for p in (tiny_model / "out").iterdir()) == [
        "gray_mask.png", "gray_overlay.png", "legend.json", "legend.png", "rgb_mask.png", "rgb_overlay.png"]  # fmt: skip


def test_small_model_direct_inference_agrees_for_one_patch(tiny_model) -> None:
    seg = Segmenter.from_files(tiny_model / "tiny.pt", backend="reference")
    image = np.random.default_rng(1).random((32, 32, 1), dtype=np.float32)
    x = seg.prepare(image)
    with torch.no_grad():
        direct = seg.model(x)[0]
    torch.testing.assert_close(seg.probabilities(image), direct, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("extra,message", [
    ((), "no images given"),
    (("missing.png",), "image missing.png not found"),
    (("nothing-*.png",), "no files match"),
    (("--overlap", "1.5", "IMG"), "overlap must be in"),
    (("--patch-size", "3", "IMG"), "cannot take an input height of 3"),
    (("--dtype", "float16", "IMG"), "float32 only"),
    (("--batch-size", "0", "IMG"), "batch size must be >= 1"),
    (("--backend", "tpu", "IMG"), "unknown backend 'tpu'"),
    (("--alpha", "2", "IMG"), "--alpha must be in"),
])  # fmt: skip
def test_bad_usage_is_exit_2(tiny_model, capsys, monkeypatch, extra, message) -> None:
    monkeypatch.chdir(tiny_model)
    extra = tuple(str(tiny_model / "images" / "gray.png") if e == "IMG" else e for e in extra)
    assert main(args(tiny_model, *extra)) == 2
    assert message in capsys.readouterr().err


def test_wrong_channel_count_is_a_failed_input_exit_3(tiny_model, capsys) -> None:
    np.save(tiny_model / "five.npy", np.zeros((16, 16, 5), np.float32))
    assert main(args(tiny_model, str(tiny_model / "five.npy"))) == 3
    assert "expected an H x W or H x W x C image with C in 1..4" in capsys.readouterr().err
    ModelCard(config=CONFIG | {"in_channels": 2}, mean=[0, 0], std=[1, 1], class_names=["bg", "a", "b"]).save(
        tiny_model / "two.json"
    )
    torch.save(UNet(**CONFIG | {"in_channels": 2}).state_dict(), tiny_model / "two.pt")
    argv = args(tiny_model, str(tiny_model / "images" / "rgb.png"))
    argv[argv.index("--weights") + 1] = str(tiny_model / "two.pt")
    assert main(argv) == 3
    assert "the model takes 2 channel(s), the image has 3" in capsys.readouterr().err


def test_missing_card_is_exit_2(tiny_model, capsys) -> None:
    (tiny_model / "tiny.json").unlink()
    assert main(args(tiny_model, str(tiny_model / "images"))) == 2
    assert "model card" in capsys.readouterr().err


def test_engine_failing_on_an_input_is_that_inputs_failure_exit_3(tiny_model, capsys, monkeypatch) -> None:
    def boom(*a, **k):
        raise RuntimeError("kernel launch failed")

    monkeypatch.setattr(segmenter_module.Segmenter, "probabilities", boom)  # whichever path runs
    assert main(args(tiny_model, str(tiny_model / "images" / "gray.png"))) == 3
    err = capsys.readouterr().err
    assert f"failed: {tiny_model / 'images' / 'gray.png'}: RuntimeError: kernel launch failed" in err
    assert not (tiny_model / "out" / "gray_mask.png").exists()


def test_engine_that_cannot_be_built_for_an_explicit_backend_is_exit_1(tiny_model, capsys, monkeypatch) -> None:
    def fail(*a, **k):
        raise ValueError("no kernels for this")

    monkeypatch.setattr(segmenter_module, "optimize", fail)
    assert main(args(tiny_model, "--backend", "cpu", str(tiny_model / "images" / "gray.png"))) == 1
    assert "could not build backend 'cpu'" in capsys.readouterr().err


def test_backend_selection_with_engine(monkeypatch) -> None:
    """auto uses unet_fast.optimize (at the patch batch shape); when it fails, auto falls back to the
    reference model and says why, while an explicit backend is an error."""
    model = UNet(**CONFIG).eval()
    example = torch.randn(2, 1, 32, 32)
    calls = []

    class FakeFused:
        backend, backend_reason = type("B", (), {"name": "cpu"})(), "auto: picked 'cpu' for cpu"

        def __init__(self, m):
            self.m = m

        def __call__(self, x):
            return self.m(x).double()

        def report_data(self):  # the runner reads whether the compile cache served it (issue 26)
            return type("R", (), {"cache": None})()

    def fake_optimize(m, ex, backend="auto", dtype=torch.float32):
        calls.append((tuple(ex.shape), backend, dtype))
        return FakeFused(m)

    monkeypatch.setattr(segmenter_module, "optimize", fake_optimize)
    runner = make_runner(model, example, "auto")
    assert calls == [((2, 1, 32, 32), "auto", torch.float32)] and "engine" in runner.note
    assert runner.predict(example).dtype == torch.float32
    monkeypatch.setattr(segmenter_module, "optimize", lambda *a, **k: (_ for _ in ()).throw(ValueError("nope")))
    assert make_runner(model, example, "auto").backend == "reference"
    with pytest.raises(RuntimeError, match="could not build backend 'cpu'"):
        make_runner(model, example, "cpu")


def test_output_names_never_collide() -> None:
    from pathlib import Path

    paths = [Path("a/x.png"), Path("b/x.tif"), Path("c/y.png"), Path("c/y.png")]
    names = output_names(paths)
    assert names[:2] == ["x_png", "x_tif"] and len(set(names)) == 4


def test_unwritable_output_is_exit_1(tiny_model, capsys) -> None:
    (tiny_model / "blocker").write_text("a file where the output folder's parent should be")
    argv = args(tiny_model, str(tiny_model / "images" / "gray.png"))
    argv[argv.index("--out") + 1] = str(tiny_model / "blocker" / "out")
    assert main(argv) == 1
    assert "cannot create --out" in capsys.readouterr().err


def test_legend_is_printed_and_written_beside_the_masks(tiny_model, capsys) -> None:
    """Which mask value is which class, in which overlay colour (issue 12, fault 8)."""
    import json

    assert main(args(tiny_model, str(tiny_model / "images" / "gray.png"))) == 0
    out = capsys.readouterr().out
    palette = ModelCard(config=CONFIG, mean=[0.4], std=[0.25], class_names=["bg", "a", "b"]).palette
    hexes = ["#{:02x}{:02x}{:02x}".format(*c) for c in palette]
    assert (f"legend (mask value: class, overlay colour): 0 bg {hexes[0]} (not tinted), 1 a {hexes[1]}, "
            f"2 b {hexes[2]}") in out  # fmt: skip
    legend = json.loads((tiny_model / "out" / "legend.json").read_text())
    assert [(e["value"], e["name"], e["rgb"], e["tinted_in_overlay"]) for e in legend["classes"]] == [
        (0, "bg", palette[0], False), (1, "a", palette[1], True), (2, "b", palette[2], True)]  # fmt: skip
    with Image.open(tiny_model / "out" / "legend.png") as im:
        rgb = np.array(im.convert("RGB"))
    for i, colour in enumerate(palette):  # the centre of each swatch (6 px margin, 24 px rows, 18 px boxes)
        assert rgb[6 + 24 * i + 9, 6 + 9].tolist() == list(colour)
    # the overlay uses exactly these colours for its tint
    with Image.open(tiny_model / "out" / "gray_mask.png") as im:
        assert im.getpalette()[:9] == [v for c in palette for v in c]
