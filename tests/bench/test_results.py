"""Results writer: JSON rows, the markdown and text tables, the plot."""

import json

from unet_fast.bench.results import (
    build_document,
    format_markdown_table,
    format_text_table,
    plot_latency,
    write_results,
)


def row(contender: str, median: float, ok: bool = True) -> dict:
    return {"workload": "unet-small", "input_shape": [1, 3, 64, 64], "dtype": "float32", "device": "cpu",
            "contender": contender, "threads": 2, "median_ms": median, "min_ms": median * 0.9,
            "max_ms": median * 1.2, "repeats": 3, "speedup_vs_eager": 10.0 / median, "setup_s": 1.5,
            "parity": {"max_abs": 1e-7 if ok else 0.4, "rel_l2": 2e-8 if ok else 0.3, "argmax_agreement": 1.0 if ok else 0.6,
                       "mean_iou": 1.0, "nonfinite": 0}, "parity_ok": ok, "note": "n|ote"}  # fmt: skip


RESULT = {"workload": "unet-small", "rows": [row("eager", 10.0), row("fast-but-wrong", 2.0, ok=False)],
          "skipped": {"openvino": "openvino is not installed"}, "failed": {}}  # fmt: skip
MACHINE = {"cpu": "Test CPU", "cores": 2, "gpu": None, "torch": "2.13.0", "python": "3.11", "commit": "abc1234",
           "dirty": False, "versions": {"onnxruntime": "1.0"}, "date_utc": "2026-01-01T00:00:00Z"}  # fmt: skip


def test_tables() -> None:
    md = format_markdown_table(RESULT["rows"])
    lines = md.splitlines()
    assert len(lines) == 4 and lines[0].startswith(
        "| workload | contender | precision | median ms | min-max ms | vs eager"
    )
    assert "| eager | fp32 | 10.0 | 9.0-12.0 | 1.00x |" in lines[2] and "FAIL" in lines[3] and "5.00x" in lines[3]
    assert "n/ote" in lines[2]  # a '|' in a note cannot break the table
    text = format_text_table(RESULT["rows"]).splitlines()
    assert text[0].index("contender") == text[2].index("eager") == text[3].index("fast-but-wrong")  # aligned
    assert set(text[1]) == {"-", " "}
    assert "fast-but-wrong" in text[3] and "FAIL" in text[3]


def test_document_and_files(tmp_path) -> None:
    doc = build_document(
        [RESULT], MACHINE, "box", note="taken while 3 other jobs ran", settings={"threads": 2}
    )
    assert doc["rows"][0]["machine"] == "box" and doc["rows"][0]["commit"] == "abc1234"
    assert doc["rows"][0]["load_note"] == "taken while 3 other jobs ran"
    paths = write_results(doc, tmp_path, "box-2026-01-01")
    assert json.loads(paths["json"].read_text())["rows"][1]["parity_ok"] is False
    md = paths["markdown"].read_text()
    assert "Test CPU" in md and "abc1234" in md and "taken while 3 other jobs ran" in md
    assert "openvino not run: openvino is not installed" in md


def test_plot(tmp_path) -> None:
    path = plot_latency(RESULT["rows"], tmp_path / "p.png", "test")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert path is None and not (tmp_path / "p.png").exists()
    else:
        assert path is not None and path.read_bytes()[:4] == b"\x89PNG"


def test_rerender_from_json(tmp_path, capsys) -> None:
    from unet_fast.bench.results import main

    doc = build_document([RESULT], MACHINE, "box", note="under load")
    paths = write_results(doc, tmp_path, "box-2026-01-01", plot=False)
    before = paths["markdown"].read_text()
    paths["markdown"].unlink()
    assert main([str(paths["json"])]) == 0
    assert paths["markdown"].read_text() == before
    assert "wrote" in capsys.readouterr().out
