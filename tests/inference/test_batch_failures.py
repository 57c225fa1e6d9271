"""One bad input never loses the others' work (issue 23, item 4), at every batch entry point that runs in
one process: `unet-fast segment FOLDER` and `Segmenter.segment_files`. For each kind of bad input
(tests/bad_inputs.py: not an image, a truncated PNG, an empty file, an unreadable file, a directory with an
image suffix, a wrong channel count, an image too large for the memory, an output path that cannot be
written), three of them sit first, in the middle and last among three good images: the good ones get
exactly the reference masks, each bad one is named with its reason and leaves no output, the exit code is
3 (the documented "some inputs failed"). The Ray path has the same matrix in tests/distributed."""

from __future__ import annotations

import numpy as np
import pytest
from bad_inputs import KINDS, deny_reads, write_good
from PIL import Image
from tiny_unet import save_tiny_unet

from unet_fast.cli import main
from unet_fast.commands import EXIT_INPUTS_FAILED, EXIT_OK
from unet_fast.inference.image_io import read_image
from unet_fast.inference.segmenter import Segmenter

BAD = ("a_bad", "m_bad", "z_bad")  # sorted first, in the middle, last
GOOD = ("b_good", "n_good", "y_good")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture
def weights(tmp_path):
    """A random 3-class U-Net with lively BatchNorm statistics, saved as weights + card (patch 32)."""
    return save_tiny_unet(tmp_path)


def _inputs(tmp_path, kind: str, monkeypatch):
    folder, out = tmp_path / "images", tmp_path / "out"
    folder.mkdir()
    make, words = KINDS[kind]
    bad = [make(folder, stem, out) for stem in BAD]
    good = [write_good(folder, stem, i) for i, stem in enumerate(GOOD)]
    if kind == "unreadable":
        deny_reads(monkeypatch, bad)
    return folder, out, bad, good, words


def _check_outputs(out, bad, good, weights, kind) -> None:
    seg = Segmenter.from_files(weights, backend="reference")
    for path in good:
        with Image.open(out / f"{path.stem}_mask.png") as im:
            np.testing.assert_array_equal(np.array(im), seg.segment(read_image(path)))
        assert (out / f"{path.stem}_overlay.png").is_file()
    for path in bad:
        assert not (out / f"{path.stem}_overlay.png").exists()
        assert (out / f"{path.stem}_mask.png").is_dir() if kind == "unwritable output" else \
            not (out / f"{path.stem}_mask.png").exists()  # fmt: skip
    assert (out / "legend.json").is_file() and (out / "legend.png").is_file()
    assert not list(out.glob(".*.tmp.png"))  # no temporary file left behind


@pytest.mark.parametrize("kind", list(KINDS))
def test_cli_segments_every_readable_input_and_names_each_failure(kind, weights, tmp_path, monkeypatch,
                                                                 capsys) -> None:  # fmt: skip
    folder, out, bad, good, words = _inputs(tmp_path, kind, monkeypatch)
    code = main(["segment", str(folder), "--weights", str(weights), "--out", str(out), "--backend", "reference"])
    captured = capsys.readouterr()
    assert code == EXIT_INPUTS_FAILED == 3, captured.err
    for path in bad:
        line = next((ln for ln in captured.err.splitlines() if ln.startswith(f"unet-fast segment: failed: {path}:")),
                    None)  # fmt: skip
        assert line is not None and words in line, captured.err
    assert "Traceback" not in captured.err
    assert "wrote 6 files for 3 of 6 image(s)" in captured.out and "3 failed (listed on stderr)" in captured.out
    _check_outputs(out, bad, good, weights, kind)


@pytest.mark.parametrize("kind", list(KINDS))
def test_python_segment_files_reports_each_failure_and_does_the_rest(kind, weights, tmp_path,
                                                                    monkeypatch) -> None:  # fmt: skip
    folder, out, bad, good, words = _inputs(tmp_path, kind, monkeypatch)
    seg = Segmenter.from_files(weights, backend="reference")
    seen = []
    report = seg.segment_files([folder], out, on_result=lambda i, r: seen.append((i, r.input.stem, r.ok)))
    assert (report.ok, report.failed) == (3, 3)
    assert [r.input.stem for r in report.results] == sorted(BAD + GOOD)  # input order
    assert seen == [(i, r.input.stem, r.ok) for i, r in enumerate(report.results)]
    assert {p.stem: e for p, e in report.failures}.keys() == set(BAD)
    for _, error in report.failures:
        assert words in error, error
    for r in report.results:
        assert r.ok == (r.input.stem in GOOD)
        if r.ok:
            assert r.mask == out / f"{r.input.stem}_mask.png" and r.error is None
            assert abs(sum(r.class_fractions) - 1) < 1e-9
        else:
            assert r.mask is None and r.overlay is None and r.class_fractions is None
    _check_outputs(out, bad, good, weights, kind)


def test_files_given_one_by_one_and_a_glob_behave_as_the_folder(weights, tmp_path, capsys) -> None:
    """Files named on the command line and glob matches go through the same per-input handling; a spec
    naming nothing is a usage error (2) before any work."""
    folder = tmp_path / "images"
    folder.mkdir()
    good = write_good(folder, "good", 0)
    (broken := folder / "broken.png").write_bytes(b"nope")
    out = tmp_path / "out"
    base = ["segment", "--weights", str(weights), "--out", str(out), "--backend", "reference", "--quiet"]
    assert main([*base, str(broken), str(good)]) == 3
    assert (out / "good_mask.png").is_file() and f"failed: {broken}" in capsys.readouterr().err
    assert main([*base, str(folder / "*.png")]) == 3
    assert main([*base, str(good)]) == EXIT_OK
    assert main([*base, str(good), str(folder / "missing.png")]) == 2
    assert "image " + str(folder / "missing.png") + " not found" in capsys.readouterr().err


def test_an_unreadable_folder_entry_is_listed_not_skipped(tmp_path) -> None:
    """A folder's entries with an image suffix are all inputs, even when they are not regular files (a
    dangling link, a directory): they fail by name instead of vanishing from the batch."""
    from unet_fast.inference.batch import collect_images

    (tmp_path / "real.png").write_bytes(b"x")
    (tmp_path / "dir.tif").mkdir()
    (tmp_path / "link.png").symlink_to(tmp_path / "gone.png")
    (tmp_path / "notes.txt").write_text("not an image suffix: not an input")
    assert [p.name for p in collect_images([tmp_path])] == ["dir.tif", "link.png", "real.png"]
