"""The bf16 comparison of `unet-fast bench --dtype bfloat16` (issue 17): the dtype argument, the precision
each row computed in (OpenVINO labelled with what it reports it ran), the table's precision column, the
ratio to the fastest bf16 peer (named) beside the fastest fp32 one, and clear skips for dtype/contender
combinations that cannot run. Tiny sizes, one round; no timing is asserted."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

import unet_fast
from unet_fast.bench import contenders as C
from unet_fast.bench.contenders import Settings, openvino_precision
from unet_fast.bench.results import (
    add_peer_ratios,
    build_document,
    format_text_table,
    markdown_document,
    peer_ratio_lines,
)
from unet_fast.bench.runner import RunConfig, make_row, parity_ok, run_workload, select_contenders
from unet_fast.bench.workloads import get_workload
from unet_fast.cli import main
from unet_fast.commands.bench import dtype_arg, results_suffix

TINY = {"workload": "unet-small", "size": (32, 48), "threads": 1, "repeats": 1, "warmup": 0}
QUICK = ["bench", "--quick", "--threads", "1", "--repeats", "1", "--warmup", "0"]
HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
HAS_ORT = importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None


def quiet(_: str) -> None:
    pass


@pytest.fixture
def cpu_backend() -> None:
    """Skip (with the reason) where unet_fast's cpu backend cannot run bf16 here; asked at run time, not at
    collection."""
    why = C.unet_fast_backend_reason("cpu", Settings("cpu", torch.bfloat16, 1, Path(".")))
    if why:
        pytest.skip(f"unet_fast cpu backend: {why}")


# --- the dtype argument ---------------------------------------------------------------------------


def test_dtype_aliases_and_results_suffix() -> None:
    assert [dtype_arg(v) for v in ("bf16", "BF16", "bfloat16", "fp32", "fp16")] == [
        "bfloat16", "bfloat16", "bfloat16", "float32", "float16"]  # fmt: skip
    assert dtype_arg("float64") == "float64"  # left for argparse's choices to reject (exit 2)
    assert results_suffix("float32") == "" and results_suffix("bfloat16") == "-bf16"
    assert results_suffix("float16") == "-fp16"


@pytest.mark.parametrize("value", ["float64", "int8", "bf17"])
def test_bad_dtype_is_exit_2_naming_the_choices(value: str, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main([*QUICK, "--dtype", value])
    assert e.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_list_at_bf16_shows_openvino_default(capsys) -> None:
    assert main(["bench", "--list", "--dtype", "bf16"]) == 0
    out = capsys.readouterr().out
    assert "contenders (cpu, bfloat16):" in out
    line = next(x for x in out.splitlines() if x.strip().startswith("openvino-default"))
    assert ("NOT usable" in line and "not installed" in line) if not HAS_OPENVINO else " usable " in line
    assert main(["bench", "--list"]) == 0  # float32: the same contender runs only when named
    line = next(x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("openvino-default"))
    assert "NOT usable" in line if not HAS_OPENVINO else "if named" in line


def test_default_selection_per_dtype() -> None:
    """openvino-default is a bf16 row: part of a bf16 run's default selection, never of an fp32 run's."""
    fp32_run, fp32_skip = select_contenders(None, Settings("cpu", torch.float32, 1, Path(".")))
    assert "openvino-default" not in {c.name for c in fp32_run} | set(fp32_skip)
    bf16_run, bf16_skip = select_contenders(None, Settings("cpu", torch.bfloat16, 1, Path(".")))
    assert "openvino-default" in {c.name for c in bf16_run} | set(bf16_skip)
    if HAS_ORT:  # ONNX Runtime stays in the bf16 run, as the fp32 reference row
        assert "onnxruntime" in {c.name for c in bf16_run}


# --- unsupported combinations: a clear skip with the reason, never a crash -------------------------


def test_unsupported_dtype_contender_combinations_skip_with_reason(tmp_path) -> None:
    s = Settings("cpu", torch.float16, 1, tmp_path)
    _, skipped = select_contenders(
        ["onnxruntime", "openvino", "openvino-default", "unet_fast-cpu", "tensorrt"], s
    )
    assert set(skipped) == {"onnxruntime", "openvino", "openvino-default", "unet_fast-cpu", "tensorrt"}
    if HAS_ORT:
        assert skipped["onnxruntime"].startswith("benchmarked at float32 only")
    if HAS_OPENVINO:
        assert "float32 (pinned f32) and bfloat16 (its default precision) only" in skipped["openvino"]
    if not C.unet_fast_backend_reason("cpu", Settings("cpu", torch.bfloat16, 1, tmp_path)):
        assert skipped["unet_fast-cpu"] == "supports float32, bfloat16 only"
    assert skipped["tensorrt"] == "GPU only"
    # the whole run goes on with what can run, and records each skip
    r = run_workload(RunConfig(**TINY, dtype=torch.float16, contenders=["eager", "onnxruntime", "unet_fast-cpu"]),
                     quiet)  # fmt: skip
    assert [row["contender"] for row in r.rows] == ["eager"] and not r.failed
    assert r.rows[0]["precision"] == "fp16" and set(r.skipped) == {"onnxruntime", "unet_fast-cpu"}


def test_cli_names_the_skipped_contender(capsys) -> None:
    assert main([*QUICK, "--no-write", "--dtype", "fp16", "--contenders", "eager,onnxruntime"]) == 4
    out = capsys.readouterr().out
    assert "unet-small: onnxruntime not run: " in out  # a line per skip, beside the table
    (eager,) = [line for line in out.splitlines() if line.startswith("unet-small 1x3x64x64 float16  eager")]
    assert eager.split()[4] == "fp16"


# --- OpenVINO: two rows, each labelled with the precision it reports it ran -------------------------


def test_openvino_precision_names() -> None:
    assert [openvino_precision(t) for t in ("f32", "bf16", "f16")] == ["fp32", "bf16", "fp16"]
    assert openvino_precision("u8") == "u8"  # an unexpected answer is shown as OpenVINO spells it


@pytest.mark.skipif(not HAS_OPENVINO, reason='openvino is not installed (pip install -e ".[bench]")')
@pytest.mark.skipif(not HAS_ORT, reason="the ONNX export needs onnx")
def test_openvino_rows_report_the_precision_they_ran() -> None:
    import openvino as ov

    # the plugin's own default, asked of the device (not of the compiled model the contender queries)
    default = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()
    r = run_workload(
        RunConfig(**TINY, dtype=torch.bfloat16, contenders=["openvino", "openvino-default"]), quiet
    )
    assert not r.failed, r.failed
    rows = {row["contender"]: row for row in r.rows}
    pinned, own = rows["openvino"], rows["openvino-default"]
    assert pinned["precision"] == "fp32" and pinned["note"].startswith("CPU plugin, f32 precision")
    assert own["precision"] == openvino_precision(default)
    assert own["note"].startswith(f"OpenVINO CPU (default: {default})")
    assert pinned["parity_ok"] and own["parity_ok"]
    # the label matches what the numbers show: f32 agrees to ~1e-7, bf16 carries bf16 rounding (~1e-3)
    assert pinned["parity"]["rel_l2"] < 1e-5
    if own["precision"] == "bf16":
        assert own["parity"]["rel_l2"] > 1e-4
    else:
        assert own["parity"]["rel_l2"] < 1e-5


# --- the contenders' bf16 paths -------------------------------------------------------------------


def test_compile_bf16_is_channels_last_with_freezing_set_and_restored(monkeypatch, tmp_path) -> None:
    """torch.compile is replaced by a recorder (compiling takes ~20 s): the bf16 row hands Inductor a bf16
    channels_last model and input and compiles under freezing=True, which is restored afterwards; the fp32
    row stays as recorded (NCHW)."""
    import torch._inductor.config as inductor_config

    seen: list[dict] = []

    def fake_compile(model):
        def call(x):
            w = next(p for p in model.parameters() if p.dim() == 4)
            seen.append({"freezing": inductor_config.freezing, "x_dtype": x.dtype, "w_dtype": w.dtype,
                         "x_cl": x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous(),
                         "w_cl": w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()})  # fmt: skip
            return model(x)

        return call

    monkeypatch.setattr(torch, "compile", fake_compile)
    before = inductor_config.freezing
    w = get_workload("unet-small")
    model, x = w.build(), w.make_input(size=(32, 48))
    p = C.CONTENDERS["compile"].prepare(model, x, Settings("cpu", torch.bfloat16, 1, tmp_path))
    assert seen[-1] == {"freezing": True, "x_dtype": torch.bfloat16, "w_dtype": torch.bfloat16, "x_cl": True,
                        "w_cl": True}  # fmt: skip
    assert inductor_config.freezing == before and "freezing, channels_last" in p.note
    assert p.precision in ("", "bf16")
    C.CONTENDERS["compile"].prepare(model, x, Settings("cpu", torch.float32, 1, tmp_path))
    assert seen[-1]["freezing"] is True and not seen[-1]["x_cl"] and seen[-1]["w_dtype"] == torch.float32
    assert inductor_config.freezing == before


def test_unet_fast_cpu_bf16_takes_and_returns_fp32(tmp_path, cpu_backend) -> None:
    w = get_workload("unet-small")
    model, x = w.build(), w.make_input(batch=2, size=(32, 48))
    p = C.CONTENDERS["unet_fast-cpu"].prepare(model, x, Settings("cpu", torch.bfloat16, 1, tmp_path))
    with torch.inference_mode():
        out = p.run()
    assert out.dtype == torch.float32 and out.shape == (2, 2, 32, 48)
    assert p.note.startswith("fp32 in/out")
    assert "bf16 tiles" in p.note or "bf16 direct" in p.note or "on bf16 storage" in p.note, p.note
    # every kernel the report's step records name is in the note, with its step count (on a CPU without AMX,
    # the Winograd on bf16 too)
    fast = unet_fast.optimize(model, x, backend="cpu", dtype=torch.bfloat16)
    steps = [s for s in fast.report_data().steps if s.backend == "cpu"]
    assert steps
    for label in {s.label for s in steps}:
        n = sum(s.label == label for s in steps)
        assert f"{n} convs by {label}" in p.note or f"{n} steps by {label}" in p.note, (label, p.note)


@pytest.mark.skipif(not HAS_ORT, reason="onnxruntime/onnx are not installed")
def test_bf16_run_end_to_end(tmp_path, capsys, cpu_backend) -> None:
    """`unet-fast bench --dtype bf16`: bf16 rows beside ONNX Runtime's fp32 reference row, parity on every
    row, the ratio lines naming the fastest bf16 peer and the fastest fp32 peer, files with a -bf16 suffix."""
    code = main([*QUICK, "--dtype", "bf16", "--contenders", "eager-cl,onnxruntime,unet_fast-cpu", "--out",
                 str(tmp_path), "--machine-name", "box"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    (path,) = tmp_path.glob("box-*-bf16.json")
    doc = json.loads(path.read_text())
    assert doc["settings"]["dtype"] == "bfloat16"
    rows = {r["contender"]: r for r in doc["rows"]}
    assert {c: r["precision"] for c, r in rows.items()} == {"eager-cl": "bf16", "onnxruntime": "fp32",
                                                            "unet_fast-cpu": "bf16"}  # fmt: skip
    assert all(r["parity_ok"] and r["dtype"] == "bfloat16" for r in rows.values())
    assert (
        rows["onnxruntime"]["parity"]["rel_l2"] < 1e-5 and "fp32 reference row" in rows["onnxruntime"]["note"]
    )
    assert 1e-4 < rows["unet_fast-cpu"]["parity"]["rel_l2"] < 5e-2  # bf16 rounding, nothing worse
    fast = rows["unet_fast-cpu"]
    assert fast["fastest_peer"] == "eager-cl" and fast["fastest_fp32_peer"] == "onnxruntime"
    assert "unet_fast-cpu (bf16) / fastest bf16 peer (eager-cl, " in out
    assert "unet_fast-cpu (bf16) / fastest fp32 peer (onnxruntime, " in out
    assert (
        "precision" in out.splitlines()[next(i for i, x in enumerate(out.splitlines()) if "median ms" in x)]
    )
    md = next(tmp_path.glob("box-*-bf16.md")).read_text()
    assert "| precision |" in md and "fastest bf16 peer" in md


# --- the table and the ratios, on rows shaped like the issue's table --------------------------------


def _row(
    contender: str, median: float, precision: str | None, ok: bool = True, dtype: str = "bfloat16"
) -> dict:
    r = {"workload": "unet64-256", "input_shape": [1, 3, 256, 256], "dtype": dtype, "device": "cpu",
         "contender": contender, "threads": 2, "median_ms": median, "min_ms": median, "max_ms": median, "setup_s": 1.0,
         "speedup_vs_eager": None, "parity_ok": ok, "note": "",
         "parity": {"max_abs": 1e-2, "rel_l2": 1e-2 if ok else 0.5, "argmax_agreement": 0.998 if ok else 0.5}}  # fmt: skip
    if precision is not None:
        r["precision"] = precision
    return r


def _issue_rows() -> list[dict]:
    return [_row("eager-cl", 79.4, "bf16"), _row("compile", 57.1, "bf16"), _row("openvino-default", 50.5, "bf16"),
            _row("openvino", 312.0, "fp32"), _row("onnxruntime", 314.0, "fp32"), _row("unet_fast-cpu", 40.4, "bf16"),
            _row("eager", 20.0, "bf16")]  # fmt: skip


def test_ratio_names_the_fastest_bf16_peer_and_keeps_the_fp32_comparison() -> None:
    rows = _issue_rows()
    rows.append(_row("tensorrt", 5.0, "bf16", ok=False))  # faster but wrong: never the reference for a ratio
    add_peer_ratios(rows)
    fast = next(r for r in rows if r["contender"] == "unet_fast-cpu")
    # eager NCHW (20 ms here) is not a peer; the fastest bf16 peer with parity ok is OpenVINO's default
    assert fast["fastest_peer"] == "openvino-default" and fast["vs_fastest_peer"] == pytest.approx(0.8)
    assert fast["fastest_fp32_peer"] == "openvino" and fast["vs_fastest_fp32_peer"] == pytest.approx(
        40.4 / 312
    )
    assert peer_ratio_lines(rows) == [
        "unet64-256 1x3x256x256: unet_fast-cpu (bf16) / fastest bf16 peer (openvino-default, 50.5 ms) = 0.80x  "
        "(latency ratio: below 1 is faster)",
        "unet64-256 1x3x256x256: unet_fast-cpu (bf16) / fastest fp32 peer (openvino, 312.0 ms) = 0.13x  "
        "(latency ratio: below 1 is faster)",
    ]
    text = format_text_table(rows).splitlines()
    header = text[0].split()
    assert header[:3] == ["workload", "contender", "precision"] and "fp32" in text[0]  # "/ fastest fp32 peer"
    cells = {line.split()[3]: line for line in text[2:]}  # workload takes 3 words: name, shape, dtype
    assert cells["openvino"].split()[4] == "fp32" and cells["unet_fast-cpu"].split()[4] == "bf16"
    assert "0.80x openvino-default" in cells["unet_fast-cpu"] and "0.13x openvino" in cells["unet_fast-cpu"]


def test_bf16_row_without_bf16_peer_says_so() -> None:
    rows = [_row("onnxruntime", 314.0, "fp32"), _row("unet_fast-cpu", 40.4, "bf16")]
    add_peer_ratios(rows)
    lines = peer_ratio_lines(rows)
    assert lines[0] == ("unet64-256 1x3x256x256: unet_fast-cpu (bf16) / fastest bf16 peer: - (no bf16 peer of "
                        "eager-cl, compile, openvino-default, tensorrt ran with parity ok)")  # fmt: skip
    assert lines[1].startswith(
        "unet64-256 1x3x256x256: unet_fast-cpu (bf16) / fastest fp32 peer (onnxruntime, "
    )


def test_fp32_table_and_lines_unchanged_but_for_the_precision_column() -> None:
    """An fp32 run (rows written before `precision` existed included) renders its precision as fp32, has no
    '/ fastest fp32 peer' column, and its ratio line reads as the README quotes it."""
    rows = [_row(c, ms, None, dtype="float32") for c, ms in (("compile", 458.9), ("onnxruntime", 481.1),
                                                             ("openvino", 480.5), ("unet_fast-cpu", 202.2))]  # fmt: skip
    add_peer_ratios(rows)
    assert "vs_fastest_fp32_peer" not in rows[-1]
    assert peer_ratio_lines(rows) == ["unet64-256 1x3x256x256: unet_fast-cpu / fastest peer (compile, 458.9 ms) = "
                                      "0.44x  (latency ratio: below 1 is faster)"]  # fmt: skip
    text = format_text_table(rows).splitlines()
    assert "fastest fp32 peer" not in text[0] and all(line.split()[4] == "fp32" for line in text[2:])
    assert "0.44x compile" in text[-1]


def test_markdown_explains_the_bf16_comparison() -> None:
    machine = {
        "cpu": "Test CPU",
        "cores": 2,
        "gpu": None,
        "torch": "2.13.0",
        "commit": "abc1234",
        "dirty": False,
    }
    rows = _issue_rows()
    doc = build_document(
        [{"workload": "unet64-256", "rows": rows, "skipped": {}, "failed": {}}], machine, "box"
    )
    md = markdown_document(doc)
    assert "| workload | contender | precision |" in md and "/ fastest fp32 peer" in md
    assert "fastest bf16 peer (eager-cl, compile, openvino-default, tensorrt)" in md
    assert (
        "- unet64-256 1x3x256x256: unet_fast-cpu (bf16) / fastest bf16 peer (openvino-default, 50.5 ms)" in md
    )


def test_parity_is_judged_by_the_rows_precision() -> None:
    """In a bf16 run an fp32 reference row must meet the fp32 limits; a bf16 row the bf16 ones."""
    parity = {"max_abs": 0.02, "rel_l2": 5e-3, "argmax_agreement": 0.998, "mean_iou": 0.99, "nonfinite": 0}
    assert parity_ok(parity, "bf16") and not parity_ok(parity, "fp32") and parity_ok(parity, torch.bfloat16)
    as_fp32 = make_row("unet-small", (1, 3, 8, 8), torch.bfloat16, "cpu", "onnxruntime", 1, [1.0], 0,
                       C.Prepared(lambda: None, 0.0, precision="fp32"), parity, None)  # fmt: skip
    as_bf16 = make_row("unet-small", (1, 3, 8, 8), torch.bfloat16, "cpu", "eager-cl", 1, [1.0], 0,
                       C.Prepared(lambda: None, 0.0), parity, None)  # fmt: skip
    assert (as_fp32["precision"], as_fp32["parity_ok"]) == ("fp32", False)
    assert (as_bf16["precision"], as_bf16["parity_ok"]) == ("bf16", True)


def test_our_fp32_row_in_a_bf16_run_is_also_compared_with_the_fastest_bf16_peer() -> None:
    """unet_fast-cpu-fp32 (our fp32 engine as a reference row of a bf16 run) gets its fp32 ratio and a line
    against the fastest bf16 peer: on a CPU without a matrix engine fp32 Winograd can beat bf16."""
    rows = [*_issue_rows()[:5], _row("unet_fast-cpu-fp32", 40.0, "fp32")]
    add_peer_ratios(rows)
    ours = rows[-1]
    assert ours["fastest_peer"] == "openvino" and ours["fastest_bf16_peer"] == "openvino-default"
    assert ours["vs_fastest_bf16_peer"] == pytest.approx(40.0 / 50.5)
    assert peer_ratio_lines(rows)[-1] == (
        "unet64-256 1x3x256x256: unet_fast-cpu-fp32 (fp32) / fastest bf16 peer (openvino-default, 50.5 ms) = "
        "0.79x  (latency ratio: below 1 is faster)"
    )


def test_our_fp32_reference_row_runs_only_in_low_precision_runs() -> None:
    from unet_fast.bench.contenders import CONTENDERS, Settings

    c = CONTENDERS["unet_fast-cpu-fp32"]
    assert c.in_default(torch.bfloat16) and not c.in_default(torch.float32)
    assert "same as unet_fast-cpu" in c.check(Settings("cpu", torch.float32, 1, Path(".")))
