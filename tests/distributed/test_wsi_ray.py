"""Whole-slide segmentation on Ray (unet_fast/distributed/wsi_ray.py) against the single process, on the demo
model and a synthetic tiled BigTIFF: the same mask file byte for byte, and a run stopped on Ray resumes in a
single process (the partial results are the same format)."""

import pytest

pytest.importorskip("ray.data")

from unet_fast.demo import bundled
from unet_fast.demo.synthetic_slide import synthetic_slide
from unet_fast.distributed.wsi_ray import segment_slide_ray
from unet_fast.inference.wsi import SlideModel, SlideSettings, segment_slide

SETTINGS = SlideSettings(mode="exact", core=256, batch_size=2)
OPTIONS = {"backend": "auto", "dtype": "float32", "patch_size": None, "overlap": 0.5, "batch_size": 2}


def test_ray_slide_equals_single_process_and_resumes_across(tmp_path, ray_cluster) -> None:
    slide = synthetic_slide(tmp_path / "s.tif", 700, 610, tissue=0.5, seed=3)
    weights = bundled.require(bundled.DEMO_WEIGHTS)
    single = segment_slide(slide, SlideModel.from_files(weights, **OPTIONS), tmp_path / "single", name="s",
                           settings=SETTINGS, progress=False)  # fmt: skip
    ray = segment_slide_ray(slide, weights, tmp_path / "ray", name="s", settings=SETTINGS, workers=2,
                            progress=False)  # fmt: skip
    assert ray.strategy == single.strategy == "exact" and ray.computed == 9
    assert ray.mask.read_bytes() == single.mask.read_bytes()

    out = tmp_path / "mixed"
    assert segment_slide_ray(slide, weights, out, name="s", settings=SETTINGS, workers=2, progress=False,
                             stop_after=4) is None  # fmt: skip
    rep = segment_slide(slide, SlideModel.from_files(weights, **OPTIONS), out, name="s", settings=SETTINGS,
                        progress=False)  # fmt: skip
    assert rep.resumed == 4 and rep.computed == 5
    assert rep.mask.read_bytes() == single.mask.read_bytes()


def test_segment_ray_routes_slides_to_tiles(tmp_path, ray_cluster, capsys) -> None:
    from unet_fast.cli import main

    slide = synthetic_slide(tmp_path / "cli.tif", 600, 520, tissue=0.5, seed=2)
    out = tmp_path / "out"
    assert (
        main(
            ["segment", str(slide), "--out", str(out), "--ray", "--workers", "1", "--tile", "256", "--quiet"]
        )
        == 0
    )
    assert "on Ray: exact tiles" in capsys.readouterr().out
    assert (out / "cli_mask.ome.tif").is_file() and (out / "cli_wsi.json").is_file()
