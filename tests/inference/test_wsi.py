"""Whole-slide segmentation (unet_fast/inference/wsi.py) on synthetic tiled BigTIFFs made here: exact tiles give
whole-image inference's class map, blended tiles give the in-memory blended window's bit for bit, background
tiles are skipped when asked, an interrupted run resumes (stopped, and killed in a subprocess), a corrupt tile
stops the run naming the tile with nothing claimed complete, and peak memory does not grow with the slide."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from unet_fast.bench.workloads import lively_weights
from unet_fast.demo.synthetic_slide import synthetic_slide
from unet_fast.inference.halo import TilingAnalysis
from unet_fast.inference.slide_io import SlideReadError, open_slide
from unet_fast.inference.sliding_window import sliding_window_inference
from unet_fast.inference.wsi import SlideJob, SlideModel, SlideSettings, segment_slide
from unet_fast.models.unet import UNet

REPO = Path(__file__).resolve().parents[2]
MEAN, STD = [0.3], [0.2]


def tiny_model(analysis: bool = True, seed: int = 0) -> SlideModel:
    """A lively depth-3, base-4 UNet (5 classes, softmax) wrapped as the slide path sees a model."""
    torch.manual_seed(seed)
    model = lively_weights(UNet(1, 5, 4, 3), seed)
    an = TilingAnalysis.from_model(model, torch.randn(1, 1, 64, 64)) if analysis else None
    return SlideModel(model, 1, 5, MEAN, STD, [f"c{i}" for i in range(5)], "softmax", an, patch=64, overlap=0.5,
                      note="reference", identity=f"tiny-{seed}")  # fmt: skip


@pytest.fixture(scope="module")
def model() -> SlideModel:
    return tiny_model()


@pytest.fixture(scope="module")
def slide(tmp_path_factory) -> Path:
    return synthetic_slide(tmp_path_factory.mktemp("slide") / "s.tif", 700, 610, tissue=0.5, seed=3)


def _whole(model: SlideModel, slide: Path) -> torch.Tensor:
    s = open_slide(slide)
    x = model.prepare(s.read(0, 0, *s.shape[:2]), "x")[None]
    s.close()
    return x


def _mask(path: Path) -> np.ndarray:
    return tifffile.imread(path)


def test_exact_slide_equals_whole_image_inference(tmp_path, model, slide) -> None:
    settings = SlideSettings(mode="exact", core=256, batch_size=3, store_tile=128, probabilities=True)
    rep = segment_slide(slide, model, tmp_path, name="s", settings=settings, progress=False)
    assert rep.strategy == "exact" and "exact tiles" in rep.reason and rep.computed == rep.cores == 9
    x = _whole(model, slide)
    with torch.no_grad():
        probs = model.predict(x)[0]
    expected = probs.argmax(0).numpy()
    top2 = probs.topk(2, dim=0).values
    clear = ((top2[0] - top2[1]) >= 1e-4).numpy()
    mask = _mask(rep.mask)
    assert mask.shape == expected.shape and mask.dtype == np.uint8
    assert (mask == expected)[clear].all()
    q = tifffile.imread(rep.probabilities)  # [K, H, W] uint8 = round(255 p)
    assert q.shape == (5, 700, 610)
    assert np.abs(q.astype(int) - np.round(probs.numpy() * 255)).max() <= 1
    meta = json.loads(rep.metadata.read_text())
    assert meta["complete"] and meta["strategy"] == "exact" and meta["geometry"]["align"] == [8, 8]
    assert meta["tiles"] == {
        "total": 9,
        "computed_this_run": 9,
        "skipped_as_background": 0,
        "done_by_earlier_runs": 0,
    }
    with tifffile.TiffFile(rep.mask) as t:
        assert t.is_bigtiff and t.is_ome and len(t.series[0].levels) == len(rep.levels) >= 3
        assert t.pages[0].is_tiled and t.pages[0].tilewidth == 128
    assert not (tmp_path / ".s.wsi-partial").exists()


def test_blended_slide_equals_in_memory_blended_bitwise(tmp_path) -> None:
    """A model without a capture gets blended windows; the tile-by-tile blend gathers the global window grid
    per core, so it is the in-memory `sliding_window_inference` of the whole image exactly."""
    slide = synthetic_slide(tmp_path / "b.tif", 300, 270, tile=128, tissue=0.6, seed=3)
    model = tiny_model(analysis=False)
    rep = segment_slide(slide, model, tmp_path, name="b", settings=SlideSettings(core=128, batch_size=4, store_tile=64),
                        progress=False)  # fmt: skip
    assert rep.strategy == "blended" and "no capture" in rep.reason
    x = _whole(model, slide)
    expected = sliding_window_inference(x, model.predict, 64, overlap=0.5, batch_size=4)[0].argmax(0).numpy()
    np.testing.assert_array_equal(_mask(rep.mask), expected)


def test_refused_model_gets_blended_with_the_reason(tmp_path, slide) -> None:
    torch.manual_seed(0)
    net = lively_weights(UNet(1, 5, 4, 3, upsample="bilinear", align_corners=True))
    an = TilingAnalysis.from_model(net, torch.randn(1, 1, 64, 64))
    model = SlideModel(net, 1, 5, MEAN, STD, list("abcde"), analysis=an, patch=64, identity="ac")
    job = SlideJob(slide, model, tmp_path, name="r", settings=SlideSettings(core=256))
    assert job.strategy == "blended" and "align_corners=True" in job.reason
    job.close()
    with pytest.raises(ValueError, match="align_corners"):
        segment_slide(
            slide, model, tmp_path, name="r2", settings=SlideSettings(mode="exact", core=256), progress=False
        )


def test_background_tiles_skipped_and_recorded(tmp_path, model) -> None:
    slide = synthetic_slide(tmp_path / "sparse.tif", 1024, 1024, tissue=0.2, seed=8)  # 3 of 16 tiles
    full = segment_slide(slide, model, tmp_path / "all", settings=SlideSettings(core=256), progress=False)
    rep = segment_slide(slide, model, tmp_path / "skip", progress=False,
                        settings=SlideSettings(core=256, tissue_threshold=0.1))  # fmt: skip
    assert 0 < rep.skipped < rep.cores and rep.computed + rep.skipped == rep.cores
    meta = json.loads(rep.metadata.read_text())
    assert meta["tissue"]["threshold"] == 0.1 and meta["tissue"]["level"] >= 1
    assert abs(meta["tissue"]["background"][0] - 31 / 255) < 0.01
    a, b = _mask(full.mask), _mask(rep.mask)
    s = open_slide(slide)
    for ty in range(4):
        for tx in range(4):
            core = (slice(ty * 256, (ty + 1) * 256), slice(tx * 256, (tx + 1) * 256))
            has_tissue = (s.read(ty * 256, tx * 256, 256, 256) != 31).any()
            if has_tissue:  # computed: as without skipping
                np.testing.assert_array_equal(b[core], a[core])
            else:  # skipped: class 0
                assert (b[core] == 0).all()


def test_stopped_run_resumes_and_matches(tmp_path, model, slide) -> None:
    settings = SlideSettings(mode="exact", core=256, batch_size=2)
    ref = segment_slide(slide, model, tmp_path / "ref", name="s", settings=settings, progress=False)
    out = tmp_path / "resumed"
    assert segment_slide(slide, model, out, name="s", settings=settings, progress=False, stop_after=4) is None
    assert not (out / "s_mask.ome.tif").exists() and not (out / "s_wsi.json").exists()
    assert len((out / ".s.wsi-partial" / "done.txt").read_text().splitlines()) == 4
    rep = segment_slide(slide, model, out, name="s", settings=settings, progress=False)
    assert rep.resumed == 4 and rep.computed == 5
    assert rep.mask.read_bytes() == ref.mask.read_bytes()
    # other settings: the partial results are not reused
    assert (
        segment_slide(slide, model, out, name="s2", settings=settings, progress=False, stop_after=2) is None
    )
    rep = segment_slide(
        slide, model, out, name="s2", settings=SlideSettings(mode="exact", core=512), progress=False
    )
    assert rep.resumed == 0


_KILLED = """
import sys, time, torch
sys.path.insert(0, {tests!r})
from test_wsi import tiny_model
from unet_fast.inference.wsi import SlideSettings, segment_slide
model = tiny_model()
inner = model.predict
def slow(x):
    time.sleep(0.5)
    return inner(x)
model.predict = slow
segment_slide({slide!r}, model, {out!r}, name="s", settings=SlideSettings(mode="exact", core=256, batch_size=1),
              progress=False)
"""


def test_killed_run_resumes_without_redoing_tiles(tmp_path, model, slide) -> None:
    out = tmp_path / "killed"
    code = textwrap.dedent(_KILLED).format(tests=str(Path(__file__).parent), slide=str(slide), out=str(out))
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO)
    done = out / ".s.wsi-partial" / "done.txt"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if done.is_file() and len(done.read_text().splitlines()) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished (or died) before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(done.read_text().splitlines())
    assert 2 <= finished < 9 and not (out / "s_mask.ome.tif").exists()
    rep = segment_slide(slide, model, out, name="s", settings=SlideSettings(mode="exact", core=256, batch_size=1),
                        progress=False)  # fmt: skip
    assert rep.resumed == finished and rep.computed == 9 - finished
    ref = segment_slide(slide, model, tmp_path / "ref", name="s",
                        settings=SlideSettings(mode="exact", core=256, batch_size=1), progress=False)  # fmt: skip
    assert rep.mask.read_bytes() == ref.mask.read_bytes()


def test_corrupt_tile_stops_naming_it_and_claims_nothing(tmp_path, model) -> None:
    path = synthetic_slide(tmp_path / "c.tif", 700, 610, tissue=1.0, seed=4, pyramid=False)
    with tifffile.TiffFile(path) as t:
        page = t.pages[0]
        offset, count = int(page.dataoffsets[5]), int(page.databytecounts[5])  # row 1, column 2
    raw = bytearray(path.read_bytes())
    raw[offset + 10 : offset + count] = bytes(count - 10)
    path.write_bytes(bytes(raw))
    out = tmp_path / "out"
    with pytest.raises(SlideReadError, match=r"tile 5 \(row 1, column 2\) at byte offset"):
        segment_slide(path, model, out, name="c", settings=SlideSettings(mode="exact", core=256, batch_size=1),
                      progress=False)  # fmt: skip
    assert not (out / "c_mask.ome.tif").exists() and not (out / "c_wsi.json").exists()
    assert (out / ".c.wsi-partial" / "done.txt").is_file()  # what finished before is kept for a rerun


_PEAK = """
import sys, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
from test_wsi import tiny_model
from unet_fast.inference.wsi import SlideSettings, segment_slide
model = tiny_model()
with open("/proc/self/clear_refs", "w") as f:  # reset the peak RSS (VmHWM): measure the run alone
    f.write("5")
rep = segment_slide({slide!r}, model, {out!r}, settings=SlideSettings(mode="exact", core=512,
                    batch_size=2, tissue_threshold=0.1), progress=False)
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(hwm, rep.computed, rep.skipped)
"""


def _peak_rss_kib(tmp_path: Path, size: int) -> tuple[int, int]:
    slide = synthetic_slide(tmp_path / f"p{size}.tif", size, size, tissue=0.04, seed=7)
    code = textwrap.dedent(_PEAK).format(tests=str(Path(__file__).parent), slide=str(slide),
                                         out=str(tmp_path / f"o{size}"))  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    res = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, check=True
    )
    peak, computed, _ = (int(v) for v in res.stdout.split())
    return peak, computed


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's VmHWM reset")
def test_peak_memory_flat_in_slide_size(tmp_path) -> None:
    """16x the pixels (1k -> 4k square, mostly background) leaves the run's peak RSS (VmHWM reset after the model
    is built) within 15% + 40 MiB: memory is the tile batch, not the slide. (Relative, subprocesses, no timing.)"""
    small, n_small = _peak_rss_kib(tmp_path, 1024)
    big, n_big = _peak_rss_kib(tmp_path, 4096)
    assert n_big > n_small >= 1  # the big slide really ran more tiles
    assert big <= small * 1.15 + 40 * 1024, (small, big)
