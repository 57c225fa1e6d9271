"""`unet-fast segment --ray` (Ray Data) against the single-process `unet-fast segment`, on the bundled demo
model and a local 2-CPU Ray: byte-identical outputs, a complete manifest, resume, a worker killed mid-job,
bad inputs recorded while the job goes on. Ray jobs are few and small: each costs actor start-up."""

import numpy as np
import pytest
from bad_inputs import KINDS, RUNNING_AS_ROOT, write_good
from distributed_helpers import crashing_predictor, write_mixed_images
from PIL import Image

from unet_fast.cli import main
from unet_fast.commands import EXIT_INPUTS_FAILED
from unet_fast.demo import bundled

pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("ray.data")

from unet_fast.distributed import batch as batch_module  # noqa: E402
from unet_fast.distributed import segment_dataset  # noqa: E402
from unet_fast.distributed.manifest import MANIFEST, file_sha256  # noqa: E402


def _outputs(folder) -> dict[str, bytes]:
    """Every mask, overlay and the legend (legend.json, legend.png) by name."""
    return {p.name: p.read_bytes() for p in sorted([*folder.glob("*.png"), *folder.glob("legend.json")])}


def _manifest(out) -> list[dict]:
    return pq.read_table(out / MANIFEST).to_pylist()


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """The 12 mixed images and the single-process run's outputs (the reference for every Ray run)."""
    root = tmp_path_factory.mktemp("ray_segment")
    names = write_mixed_images(root / "images", np.random.default_rng(13))
    assert len(names) == 12
    assert main(["segment", str(root / "images"), "--out", str(root / "single"), "--quiet"]) == 0
    reference = _outputs(root / "single")
    assert len(reference) == 26  # a mask and an overlay per image, legend.json and legend.png
    return root, reference


def test_ray_outputs_are_byte_identical_manifest_complete_and_rerun_skips(mixed, ray_cluster, capsys) -> None:
    root, reference = mixed
    out = root / "ray"
    assert (
        main(["segment", str(root / "images"), "--out", str(out), "--ray", "--workers", "2", "--quiet"]) == 0
    )
    assert "12 ok, 0 failed, 0 already done" in capsys.readouterr().out
    assert _outputs(out) == reference  # same file names, same bytes

    rows = _manifest(out)
    assert [r["name"] for r in rows] == [n for n in sorted(p.stem for p in (root / "single").glob("*_mask.png"))
                                         for n in [n.removesuffix("_mask")]]  # fmt: skip
    weights_hash = file_sha256(bundled.DEMO_WEIGHTS)
    for r in rows:
        assert r["status"] == "ok" and r["error"] is None and not r["resumed"]
        assert r["weights_hash"] == weights_hash and r["seconds"] > 0
        with Image.open(out / r["mask"]) as im:
            mask = np.array(im)
        assert (r["height"], r["width"]) == mask.shape
        np.testing.assert_allclose(r["class_fractions"], np.bincount(mask.ravel(), minlength=5) / mask.size)
        assert r["overlay"] == f"{r['name']}_overlay.png"
    assert len({r["worker"] for r in rows}) <= 2
    assert {r["input"] for r in rows} == {str(p.resolve()) for p in (root / "images").iterdir()}
    # the engine was built once, on the driver: every actor loaded its file (no capture in an actor)
    assert {r["engine"] for r in rows} == {"file"} and all(r["worker_startup_s"] > 0 for r in rows)
    assert not (out / ".engine").exists()  # the run is over: no large hidden file left behind

    def stamps_of_per_image_outputs() -> dict[str, int]:  # the legend is the model's, rewritten each run
        return {p.name: p.stat().st_mtime_ns for p in out.glob("*_*.png")}

    stamps = stamps_of_per_image_outputs()
    assert main(["segment", str(root / "images"), "--out", str(out), "--ray", "--quiet"]) == 0
    assert "12 ok, 0 failed, 12 already done" in capsys.readouterr().out
    assert stamps_of_per_image_outputs() == stamps  # no mask or overlay rewritten
    assert all(r["resumed"] for r in _manifest(out)) and len(_manifest(out)) == 12


def test_worker_killed_mid_job_every_input_once_with_the_right_mask(mixed, ray_cluster, tmp_path,
                                                                     monkeypatch) -> None:  # fmt: skip
    root, reference = mixed
    out = root / "ray"  # the previous test's outputs: --overwrite must redo them all
    markers = tmp_path / "markers"
    markers.mkdir()
    # The first actor to meet big.png (the largest input, so other work is in flight) kills its process.
    monkeypatch.setattr(batch_module, "SegmentPredictor", crashing_predictor(markers, {"big": 1}))
    for p in out.glob("*_mask.png"):
        p.write_bytes(b"stale")  # a redo that skipped an input would leave this behind
    report = segment_dataset([root / "images"], bundled.DEMO_WEIGHTS, out, workers=2, overlay=True,
                             overwrite=True, progress=False)  # fmt: skip
    assert (markers / "crashed-big-0").is_file()  # the crash did happen
    assert (report.total, report.ok, report.failed, report.resumed) == (12, 12, 0, 0)
    rows = _manifest(out)
    assert sorted(r["name"] for r in rows) == sorted({r["name"] for r in rows}) and len(rows) == 12
    assert all(r["status"] == "ok" and not r["resumed"] for r in rows)
    assert _outputs(out) == reference
    assert not (out / ".attempts").exists() and not (out / ".manifest-parts").exists()


def test_bad_inputs_are_rows_the_job_goes_on_exit_code_3(ray_cluster, tmp_path, monkeypatch, capsys) -> None:
    """Every kind of bad input of the single-process matrix (tests/bad_inputs.py), spread first, in the
    middle and last among good images, plus an image over max_pixels and one that kills every worker
    process that touches it: each is a failed row with its reason, named on stderr; the good ones are done;
    the exit code is 3, as without --ray. (Unreadable permissions only when not root: root reads a mode-000
    file, and the Ray workers are other processes, beyond the in-process stand-in.)"""
    images, out = tmp_path / "images", tmp_path / "out"
    images.mkdir()
    kinds = [k for k in KINDS if not (k == "unreadable" and RUNNING_AS_ROOT)]
    expected = {}
    for i, kind in enumerate(kinds):
        make, words = KINDS[kind]
        if kind == "too large for the memory":  # max_pixels (default 2**28) refuses it first on Ray
            words = "ImageTooLargeError: "
        expected[make(images, f"{'amz'[i % 3]}{i}", out).stem] = words
    good = [write_good(images, stem, i) for i, stem in enumerate(("b_good", "n_good", "y_good"))]
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (60, 60), dtype=np.uint8)).save(images / "poison.png")
    # 17000 x 17000 > the 2**28-pixel limit; a sparse file, refused from its header, never decoded.
    np.lib.format.open_memmap(images / "huge.npy", mode="w+", dtype=np.uint8, shape=(17000, 17000)).flush()
    expected |= {"huge": "289000000 pixels, more than the limit", "poison": "WorkerDied: the worker process died 2 times"}
    markers = tmp_path / "markers"
    markers.mkdir()
    # kills every process that touches poison.png
    monkeypatch.setattr(batch_module, "SegmentPredictor", crashing_predictor(markers, {"poison": 9}))
    code = main(["segment", str(images), "--out", str(out), "--ray", "--workers", "2"])  # with the bar
    err = capsys.readouterr().err
    assert code == EXIT_INPUTS_FAILED == 3
    n = len(expected) + len(good)
    assert f"{n}/{n}" in err and "img/s" in err and f"failed={len(expected)}" in err  # tqdm: done, rate, failures
    rows = {r["name"]: r for r in _manifest(out)}
    assert len(rows) == n
    for path in good:
        assert rows[path.stem]["status"] == "ok" and (out / f"{path.stem}_mask.png").is_file()
    for name, words in expected.items():
        assert rows[name]["status"] == "failed" and words in rows[name]["error"], rows[name]["error"]
        assert rows[name]["mask"] is None and rows[name]["overlay"] is None
        assert not (out / f"{name}_overlay.png").exists()
        assert f"failed: {images / name}" in err
    assert len(list(markers.iterdir())) == 2  # two processes died on poison.png, then it was given up


def test_a_sigmoid_model_on_ray_writes_the_single_process_outputs(ray_cluster, tmp_path, capsys) -> None:
    """The head's mask rule (issue 23, item 5) on the --ray path: a one-channel sigmoid model's masks,
    overlays and legend are byte-identical to the single-process run, and the manifest's fractions are
    those of background / foreground."""
    import torch

    from unet_fast import UNet
    from unet_fast.inference.model_card import ModelCard

    cfg = dict(in_channels=1, num_classes=1, base_channels=4, depth=2, head="sigmoid")
    torch.manual_seed(4)
    torch.save(UNet(**cfg).eval().state_dict(), tmp_path / "sig.pt")
    ModelCard(config=cfg, mean=[0.5], std=[0.25], class_names=["cell"], patch_size=32).save(tmp_path / "sig.json")
    images = tmp_path / "images"
    images.mkdir()
    for i, stem in enumerate(("a", "b", "c")):
        write_good(images, stem, i)
    base = ["segment", str(images), "--weights", str(tmp_path / "sig.pt"), "--quiet"]
    assert main([*base, "--out", str(tmp_path / "single")]) == 0
    assert main([*base, "--out", str(tmp_path / "ray"), "--ray", "--workers", "2"]) == 0
    capsys.readouterr()
    assert _outputs(tmp_path / "ray") == _outputs(tmp_path / "single")
    table = pq.read_table(tmp_path / "ray" / MANIFEST)
    assert table.schema.metadata[b"class_names"] == b'["background", "cell"]'
    for r in table.to_pylist():
        with Image.open(tmp_path / "ray" / r["mask"]) as im:
            mask = np.array(im)
        assert set(np.unique(mask)) <= {0, 1}
        assert r["class_fractions"] == pytest.approx([1 - mask.mean(), mask.mean()])
