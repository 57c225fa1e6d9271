"""`unet-fast segment --ray` (Ray Data) against the single-process `unet-fast segment`, on the bundled demo
model and a local 2-CPU Ray: byte-identical outputs, a complete manifest, resume, a worker killed mid-job,
bad inputs recorded while the job goes on. Ray jobs are few and small: each costs actor start-up."""

import numpy as np
import pytest
from distributed_helpers import crashing_predictor, write_mixed_images
from PIL import Image

from unet_fast.cli import main
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


def test_bad_inputs_are_rows_the_job_goes_on_exit_code_counts_them(ray_cluster, tmp_path, monkeypatch,
                                                                   capsys) -> None:  # fmt: skip
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 256, (70, 90), dtype=np.uint8)).save(images / "good.png")
    Image.fromarray(rng.integers(0, 256, (60, 60), dtype=np.uint8)).save(images / "poison.png")
    (images / "garbage.png").write_bytes(b"this is not a PNG")
    (images / "empty.tif").write_bytes(b"")
    np.save(images / "five.npy", rng.random((40, 40, 5), dtype=np.float32))
    # 17000 x 17000 > the 2**28-pixel limit; a sparse file, refused from its header, never decoded.
    np.lib.format.open_memmap(images / "huge.npy", mode="w+", dtype=np.uint8, shape=(17000, 17000)).flush()
    markers = tmp_path / "markers"
    markers.mkdir()
    # kills every process that touches poison.png
    monkeypatch.setattr(batch_module, "SegmentPredictor", crashing_predictor(markers, {"poison": 9}))
    out = tmp_path / "out"
    code = main(["segment", str(images), "--out", str(out), "--ray", "--workers", "2"])  # with the bar
    err = capsys.readouterr().err
    assert code == 5
    assert "6/6" in err and "img/s" in err and "failed=5" in err  # tqdm: done, rate, failures
    rows = {r["name"]: r for r in _manifest(out)}
    assert len(rows) == 6 and rows["good"]["status"] == "ok" and (out / "good_mask.png").is_file()
    expected = {"garbage": "cannot read", "empty": "cannot read", "five": "image with C in 1..4 channels, got shape (40, 40, 5)",
                "huge": "289000000 pixels, more than the limit", "poison": "WorkerDied: the worker process died 2 times"}  # fmt: skip
    for name, words in expected.items():
        assert rows[name]["status"] == "failed" and words in rows[name]["error"], rows[name]["error"]
        assert rows[name]["mask"] is None and not (out / f"{name}_mask.png").exists()
        assert f"failed: {images / name}" in err
    assert len(list(markers.iterdir())) == 2  # two processes died on poison.png, then it was given up
