"""The pieces of unet_fast.distributed that run without a Ray cluster: the error when Ray is missing, the
manifest and resume rules, size limits, request decoding, and the cross-request patch batching."""

import io
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from unet_fast.cli import main
from unet_fast.demo import bundled
from unet_fast.distributed import http_io, limits, manifest
from unet_fast.distributed.replay import segment_many
from unet_fast.inference.batch import check_pixels
from unet_fast.inference.image_io import ImageTooLargeError, read_header, read_image
from unet_fast.inference.segmenter import Segmenter

pytest.importorskip("pyarrow")


@pytest.mark.parametrize("argv", [["segment", "--demo", "--ray"], ["segment", "--demo", "--ray-address", "auto"],
                                  ["serve"]])  # fmt: skip
def test_missing_ray_names_the_install_command(argv, monkeypatch, tmp_path, capsys) -> None:
    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    assert main([*argv, "--out", str(tmp_path / "out")] if argv[0] == "segment" else argv) == 1
    err = capsys.readouterr().err
    assert 'pip install "unet_fast[ray]"' in err and "not installed" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag", [["--workers", "2"], ["--overwrite"]])
def test_ray_only_flags_need_ray(flag, tmp_path, capsys) -> None:
    assert main(["segment", "--demo", "--out", str(tmp_path), *flag]) == 2
    assert "need --ray" in capsys.readouterr().err


def _row(tmp_path, **changes) -> dict:
    (tmp_path / "a_mask.png").write_bytes(b"png")
    row = {"input": "/data/a.png", "name": "a", "status": "ok", "mask": "a_mask.png", "overlay": None,
           "weights_hash": "w", "settings_hash": "s", "class_fractions": [0.25, 0.75], "height": 2, "width": 2}  # fmt: skip
    return {**row, **changes}


def test_manifest_parts_are_read_back_and_later_rows_win(tmp_path) -> None:
    manifest.write_part(tmp_path, 0, [_row(tmp_path, status="failed", error="ValueError: x", mask=None)])
    manifest.write_part(tmp_path, 1, [_row(tmp_path)])
    (tmp_path / manifest.PARTS / "part-000002.parquet").write_bytes(b"torn")  # a killed driver's last part
    rows = manifest.read_rows(tmp_path)
    assert [r["status"] for r in rows] == ["failed", "ok"] and rows[1]["class_fractions"] == [0.25, 0.75]
    assert manifest.next_part_index(tmp_path) == 3  # a resumed run writes after the parts left behind
    path = manifest.write_manifest(tmp_path, rows[1:], ["bg", "fg"])
    assert not (tmp_path / manifest.PARTS).exists()
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    assert table.schema.metadata[b"class_names"] == b'["bg", "fg"]' and table.num_rows == 1
    assert manifest.read_rows(tmp_path)[0]["name"] == "a"


@pytest.mark.parametrize(("changes", "overlay", "reusable"), [
    ({}, False, True),
    ({"weights_hash": "other"}, False, False),
    ({"settings_hash": "other"}, False, False),
    ({"status": "failed"}, False, False),
    ({"mask": "gone_mask.png"}, False, False),
    ({}, True, False),  # asked for overlays now, the earlier run wrote none
])  # fmt: skip
def test_resume_reuses_only_finished_rows_with_the_same_hashes(tmp_path, changes, overlay, reusable) -> None:
    assert manifest.reusable(_row(tmp_path, **changes), tmp_path, "w", "s", overlay) is reusable


def test_settings_hash_changes_with_what_decides_the_mask() -> None:
    card = {"model": {"depth": 3}}
    base = manifest.settings_hash(card, {"overlap": 0.5})
    assert base == manifest.settings_hash(card, {"overlap": 0.5})
    assert base != manifest.settings_hash(card, {"overlap": 0.25})
    assert base != manifest.settings_hash({"model": {"depth": 4}}, {"overlap": 0.5})


def test_pixel_limit_reads_headers_only(tmp_path) -> None:
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(tmp_path / "a.png")
    np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.uint8, shape=(20000, 20000)).flush()
    assert read_header(tmp_path / "a.png").pixels == 1200
    assert read_header(tmp_path / "big.npy").pixels == 400_000_000  # a sparse file: never read
    check_pixels(read_header(tmp_path / "a.png"), 1200)
    with pytest.raises(ImageTooLargeError, match="1200 pixels, more than the limit of 1199"):
        check_pixels(read_header(tmp_path / "a.png"), 1199)
    with pytest.raises(ImageTooLargeError, match="1200 pixels, more than the limit of 1199"):
        http_io.decode((tmp_path / "a.png").read_bytes(), 1, 1199)
    assert limits.DEFAULT_MAX_PIXELS == 1 << 28


def test_request_decoding_matches_read_image_and_names_the_upload(tmp_path) -> None:
    rng = np.random.default_rng(0)
    for fmt, suffix in (("PNG", ".png"), ("TIFF", ".tif"), ("npy", ".npy")):
        array = (
            rng.integers(0, 65536, (17, 23), np.uint16) if fmt != "npy" else rng.random((17, 23), np.float32)
        )
        path = tmp_path / f"x{suffix}"
        if fmt == "npy":
            np.save(path, array)
        else:
            Image.fromarray(array).save(path)
        body = path.read_bytes()
        assert http_io.sniff_suffix(body) == suffix
        np.testing.assert_array_equal(http_io.decode(body, 1, None), read_image(path))
    with pytest.raises(ValueError, match=r"^upload: expected an H x W"):
        buf = io.BytesIO()
        np.save(buf, np.zeros((4, 4, 6), np.float32))
        http_io.decode(buf.getvalue(), 1, None)
    with pytest.raises(ValueError, match="not a PNG, TIFF"):
        http_io.decode(b"GIF89a", 1, None)


@pytest.fixture(scope="module")
def demo_segmenter() -> Segmenter:
    return Segmenter.from_files(bundled.DEMO_WEIGHTS, batch_size=3)


def test_segment_many_equals_segment_per_image_with_fewer_model_calls(demo_segmenter) -> None:
    seg = demo_segmenter
    rng = np.random.default_rng(8)
    # tiles (one patch each), smaller than a patch (padded), larger (windowed), odd sizes, a 3-channel one
    shapes = [(128, 128, 1), (128, 128, 1), (61, 97, 1), (200, 143, 1), (128, 128, 3), (129, 300, 1)]
    images = [rng.random(s, dtype=np.float32) for s in shapes]
    calls_alone = 0
    counting = seg.runner.predict

    def count(x):
        nonlocal calls_alone
        calls_alone += 1
        return counting(x)

    seg.runner.predict = count
    try:
        expected = [seg.segment(im) for im in images]
    finally:
        seg.runner.predict = counting
    masks, calls = segment_many(seg, images)
    for got, want in zip(masks, expected, strict=True):
        assert got.dtype == np.uint8 and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    assert calls < calls_alone


def test_a_patch_output_does_not_depend_on_its_batch_companions(demo_segmenter) -> None:
    """What segment_many relies on, checked on the engine directly (fresh random patches)."""
    x = torch.randn(3, 1, 128, 128)
    together = demo_segmenter.runner.predict(x)
    for i in range(3):
        alone = torch.zeros_like(x)
        alone[(i + 1) % 3] = x[i]
        assert torch.equal(demo_segmenter.runner.predict(alone)[(i + 1) % 3], together[i])
