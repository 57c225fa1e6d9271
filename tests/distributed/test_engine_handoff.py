"""The engine handoff of `segment --ray` and `serve` without Ray (issue 26): the driver builds the engine once
and writes its file (distributed/engines.prepare_engine); a worker (SegmentPredictor, as a Ray actor builds it)
loads it with no capture, and its masks are the ones a worker that built its own engine writes; a file that
cannot be used (missing, other weights, another dtype) makes the worker build its own and say why; a second
driver run reuses the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import unet_fast
from unet_fast.demo import bundled
from unet_fast.distributed.engines import prepare_engine
from unet_fast.distributed.worker import SegmentOptions, SegmentPredictor
from unet_fast.inference.segmenter import Segmenter


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("engines")
    options = SegmentOptions()
    return prepare_engine(bundled.DEMO_WEIGHTS, None, options.segmenter_kwargs(), folder, "demo.ufe"), options, folder


def _predictor(out: Path, options: SegmentOptions, engine: str | None) -> SegmentPredictor:
    out.mkdir(parents=True, exist_ok=True)  # segment_dataset makes it before the actors start
    return SegmentPredictor(str(bundled.DEMO_WEIGHTS), None, str(out), options, None, 1, "w", "s", engine=engine)


def test_the_driver_builds_once_and_a_worker_loads_without_capturing(shared, tmp_path, monkeypatch) -> None:
    engine, options, _ = shared
    assert engine.path is not None and engine.origin == "built" and "once on the driver" in engine.note
    calls = [0]
    real = torch.export.export

    def counting(*a, **k):
        calls[0] += 1
        return real(*a, **k)

    monkeypatch.setattr(torch.export, "export", counting)
    image = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (150, 170), dtype=np.uint8)).save(image)
    loaded = _predictor(tmp_path / "a", options, engine.path)
    assert calls[0] == 0 and loaded.seg.runner.origin == "file"
    assert loaded.seg.runner.engine.report_data().artifact is not None
    built = _predictor(tmp_path / "b", options, None)
    assert calls[0] >= 1 and built.seg.runner.origin == "built"
    rows = [json.loads(p({"input": np.array([str(image)]), "name": np.array(["img"])})["row"][0])
            for p in (loaded, built)]  # fmt: skip
    assert [r["engine"] for r in rows] == ["file", "built"] and all(r["worker_startup_s"] > 0 for r in rows)
    assert (tmp_path / "a" / "img_mask.png").read_bytes() == (tmp_path / "b" / "img_mask.png").read_bytes()


def test_a_file_that_cannot_be_used_is_built_instead_with_the_reason(shared, tmp_path) -> None:
    engine, _options, _ = shared
    missing = Segmenter.from_files(bundled.DEMO_WEIGHTS, engine=tmp_path / "gone.ufe")
    assert missing.runner.origin == "built" and "was not used (FileNotFoundError" in missing.runner.note
    bf16 = Segmenter.from_files(bundled.DEMO_WEIGHTS, dtype="bfloat16", engine=engine.path)
    assert bf16.runner.origin == "built" and "not used" in bf16.runner.note
    from unet_fast.inference.model_card import load_model

    model, card = load_model(bundled.DEMO_WEIGHTS)
    with torch.no_grad():
        next(model.parameters())[0].add_(1.0)  # other weights than the file's
    other = Segmenter(model, card, engine=engine.path)
    assert other.runner.origin == "built" and "weights differ" in other.runner.note


def test_a_second_driver_run_reuses_the_file(shared) -> None:
    engine, options, folder = shared
    again = prepare_engine(bundled.DEMO_WEIGHTS, None, options.segmenter_kwargs(), folder, "demo.ufe")
    assert again.path == engine.path and again.origin == "reused"
    given = prepare_engine(bundled.DEMO_WEIGHTS, None, options.segmenter_kwargs(), folder, "x.ufe", engine.path)
    assert given.origin == "given" and given.path == str(Path(engine.path).resolve())
    reference = prepare_engine(bundled.DEMO_WEIGHTS, None, {**options.segmenter_kwargs(), "backend": "reference"},
                               folder, "r.ufe")  # fmt: skip
    assert reference.path is None and "reference" in reference.note


def test_export_engine_command_writes_a_file_segment_loads(tmp_path, capsys) -> None:
    from unet_fast.cli import main

    out = tmp_path / "demo.ufe"
    assert main(["export", "engine", "--weights", str(bundled.DEMO_WEIGHTS), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"wrote {out}" in said and "unet_fast.load" in said
    assert unet_fast.load(out).report_data().artifact.repacked == ()
    assert main(["segment", "--demo", "--engine", str(out), "--out", str(tmp_path / "seg"), "--quiet"]) == 0
    assert f"loaded from {out}" in capsys.readouterr().out


def test_engine_commands_refuse_a_bad_path_before_any_work(tmp_path, capsys) -> None:
    """--engine naming no file or a folder, and export engine --out naming a folder or a missing folder: exit 2
    with the reason, before optimize / Ray start, nothing written."""
    from unet_fast.cli import main

    missing, folder = tmp_path / "gone.ufe", tmp_path / "dir"
    folder.mkdir()
    cases = [
        (["segment", "--demo", "--engine", str(missing), "--out", str(tmp_path / "seg")], "no such file"),
        (["segment", "--demo", "--engine", str(folder), "--out", str(tmp_path / "seg")], "is a folder"),
        (["segment", "--demo", "--ray", "--engine", str(missing), "--out", str(tmp_path / "seg")], "no such file"),
        (["serve", "--engine", str(missing)], "no such file"),
        (["export", "engine", "--weights", str(bundled.DEMO_WEIGHTS), "--out", str(folder)], "is a folder"),
        (["export", "engine", "--weights", str(bundled.DEMO_WEIGHTS), "--out", str(tmp_path / "no" / "m.ufe")],
         "does not exist"),
    ]
    for argv, why in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert why in err, (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir"] and not list(folder.iterdir())
