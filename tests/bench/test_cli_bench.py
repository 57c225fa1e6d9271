"""`unet-fast bench`: the table, the results files, and exit codes a script can rely on."""

import json
import subprocess
import sys

import pytest
import torch

from unet_fast.bench import contenders as C
from unet_fast.cli import main

QUICK = ["bench", "--quick", "--threads", "1", "--repeats", "1", "--warmup", "0"]


def test_quick_run_prints_table_and_writes_results(tmp_path, capsys) -> None:
    code = main([*QUICK, "--contenders", "eager,eager-cl", "--batch", "2", "--out", str(tmp_path),
                 "--machine-name", "test-box", "--note", "under test"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "median ms" in out and "argmax agree" in out and "eager-cl" in out and "pytorch eager" in out
    doc = json.loads(next(tmp_path.glob("test-box-*.json")).read_text())
    assert doc["machine_name"] == "test-box" and doc["note"] == "under test"
    assert (
        doc["machine"]["threads"] == 1
        and doc["machine"]["commit"]
        and "onnxruntime" in doc["machine"]["versions"]
    )
    rows = doc["rows"]
    assert [r["contender"] for r in rows] == ["eager", "eager-cl"]
    for r in rows:
        assert r["machine"] == "test-box" and r["threads"] == 1 and r["input_shape"] == [2, 3, 64, 64]
        assert {"median_ms", "min_ms", "max_ms", "commit"} <= set(r)
        assert {"max_abs", "rel_l2", "argmax_agreement"} <= set(r["parity"])
    md = next(tmp_path.glob("test-box-*.md")).read_text()
    assert "| workload | contender | precision | median ms |" in md and "under test" in md
    pngs = list(tmp_path.glob("test-box-*.png"))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert not pngs
    else:
        assert pngs and pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workload", "nope"], "unknown workload 'nope'"),
        (["--contenders", "eager,nope"], "unknown contender 'nope'"),
        (["--backends", "gpu9"], "unknown backend 'gpu9'"),
        (["--size", "64x"], "--size must look like"),
        (["--batch", "0"], "--batch must be >= 1"),
        (["--threads", "0"], "threads must be >= 1"),
        (["--workload", "unet-original", "--size", "100"], "cannot take an input height of 100"),
    ],
)
def test_bad_usage_is_exit_2(args, message, capsys) -> None:
    assert main([*QUICK, "--no-write", *args]) == 2
    assert message in capsys.readouterr().err


def test_bad_dtype_is_argparse_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main([*QUICK, "--dtype", "float64"])
    assert e.value.code == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_exit_2(capsys) -> None:
    assert main([*QUICK, "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="tensorrt is GPU only: on a GPU it may be usable")
def test_named_contender_unavailable_is_exit_4(capsys) -> None:
    assert main([*QUICK, "--no-write", "--contenders", "eager,tensorrt"]) == 4
    out = capsys.readouterr().out
    assert "tensorrt not run: GPU only" in out and "eager" in out


def _install(monkeypatch, name: str, factory) -> None:
    def prepare(model, x, s):
        return C.Prepared(factory(model, x), 0.0)

    monkeypatch.setitem(C.CONTENDERS, name, C.Contender(name, "test double", "peer", lambda s: "", prepare))


def test_parity_failure_is_exit_3(monkeypatch, capsys) -> None:
    _install(monkeypatch, "wrong", lambda m, x: lambda: m(x) + 0.5)
    assert main([*QUICK, "--no-write", "--contenders", "eager,wrong"]) == 3
    assert "FAIL" in capsys.readouterr().out


def test_runtime_failure_is_exit_1(monkeypatch, capsys) -> None:
    def broken(m, x):
        raise RuntimeError("no kernel for you")

    _install(monkeypatch, "broken", broken)
    assert main([*QUICK, "--no-write", "--contenders", "eager,broken"]) == 1
    assert "broken FAILED: RuntimeError: no kernel for you" in capsys.readouterr().out


def test_list(capsys) -> None:
    assert main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    for name in ("unet64-256", "unet-original", "smp-resnet34", "eager", "compile", "onnxruntime", "openvino",
                 "unet_fast-cpu"):  # fmt: skip
        assert name in out


def test_console_script_splits_progress_from_table(tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-m", "unet_fast.cli", *QUICK, "--backends", "none", "--no-write"],
                          capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "round 1/1" in proc.stderr and "round 1/1" not in proc.stdout
    assert "median ms" in proc.stdout and "compile not run: --quick" in proc.stdout
    assert not list(tmp_path.iterdir())  # --no-write wrote nothing


def test_contender_selection() -> None:
    from unet_fast.bench.contenders import CONTENDERS
    from unet_fast.commands.bench import _exit_code, contender_names

    # openvino-default (OpenVINO at its own precision: bf16 on CPUs that have it) and unet_fast-cpu-fp32 (our
    # fp32 engine as a reference row) are bf16-run rows: the fp32 run leaves them out unless named
    peers = [n for n in CONTENDERS if not n.startswith("unet_fast-") and n != "openvino-default"]
    assert contender_names(None, None, False) == (None, set())
    low_only = ("openvino-default", "unet_fast-cpu-fp32")
    assert contender_names(None, None, True)[0] == [n for n in CONTENDERS if n not in ("compile", *low_only)]
    # MNN and ncnn are fp32 rows only (benchmarked at float32: issue 25's Winograd peers)
    fp32_only = ("mnn", "mnn-normal", "ncnn")
    assert contender_names(None, None, True, "bfloat16")[0] == [n for n in CONTENDERS
                                                                if n not in ("compile", *fp32_only)]  # fmt: skip
    assert contender_names(["openvino-default"], None, False) == (["openvino-default"], {"openvino-default"})
    names, named = contender_names(["eager", "unet_fast"], None, False)
    assert names == ["eager", "unet_fast-torch", "unet_fast-cpu", "unet_fast-triton", "unet_fast-cuda"]
    assert named == {"eager"}  # the group does not make triton/cuda mandatory on a CPU machine
    assert contender_names(None, ["cpu"], False) == ([*peers, "unet_fast-cpu"], {"unet_fast-cpu"})
    assert contender_names(["eager"], ["none"], False) == (["eager"], {"eager"})
    with pytest.raises(ValueError, match="unknown backend"):
        contender_names(None, ["gpu9"], False)
    ok = [{"parity_ok": True}]
    assert _exit_code([{"failed": {}, "skipped": {"tensorrt": "GPU only"}}], ok, set()) == 0
    assert _exit_code([{"failed": {}, "skipped": {"tensorrt": "GPU only"}}], ok, {"tensorrt"}) == 4
    assert _exit_code([{"failed": {}, "skipped": {}}], [{"parity_ok": False}], set()) == 3
    assert _exit_code([{"failed": {"x": "boom"}, "skipped": {}}], [{"parity_ok": False}], set()) == 1
