"""A busy machine is detected, warned about loudly and recorded (issue 12, fault 5); the default run prints
the README's "/ fastest peer" ratio, says how to reproduce the README's table and names no workload it was
not asked for (fault 6)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from unet_fast.bench import load
from unet_fast.bench.load import Snapshot, assess
from unet_fast.bench.results import add_peer_ratios, format_text_table, peer_ratio_lines
from unet_fast.cli import main

HZ = os.sysconf("SC_CLK_TCK")
ME = 1000
# pids above the kernel's pid_max (4194304 at most): no real process has them, so no /proc command line
A, B, C = 9_000_042, 9_000_043, 9_000_077


def snap(wall: float, load_1min: float, busy_s: float, procs: dict[int, tuple[int, str, float]]) -> Snapshot:
    return Snapshot(wall, load_1min, int(busy_s * HZ), {p: (pp, n, int(c * HZ)) for p, (pp, n, c) in procs.items()})


def test_own_process_tree_is_not_competition() -> None:
    """10 s run on 2 cores: the bench (pid 1000) and its compile worker (1001) used 18 CPU-s; nothing else."""
    start = snap(0, 0.1, 100, {ME: (1, "python", 5), 1001: (ME, "compile_worker", 0), 7: (1, "sshd", 1)})
    end = snap(10, 1.9, 118, {ME: (1, "python", 20), 1001: (ME, "compile_worker", 3), 7: (1, "sshd", 1)})
    r = assess(start, end, cores=2, me=ME)
    assert r.others_cores == 0.0 and not r.busy and r.competitors == []
    assert r.summary().startswith("quiet: other processes used 0.00 of 2 cores")
    assert r.warning_lines() == []


def test_competing_processes_make_the_run_busy_and_are_named() -> None:
    """Another job took 12 CPU-s of a 10 s run: 1.2 of 2 cores."""
    start = snap(0, 0.2, 100, {ME: (1, "python", 5), A: (1, "pytest", 50), B: (1, "make", 0)})
    end = snap(10, 2.5, 100 + 15 + 12 + 0.5, {ME: (1, "python", 20), A: (1, "pytest", 62), B: (1, "make", 0.5)})
    r = assess(start, end, cores=2, me=ME)
    assert r.others_cores == pytest.approx(1.25) and r.busy
    assert r.competitors[0] == {"pid": A, "name": "pytest", "cpu_s": 12.0, "command": ""}
    assert [c["pid"] for c in r.competitors] == [A, B]  # make: 0.5 s = 5% of the run: still named
    text = "\n".join(r.warning_lines())
    assert "BUSY MACHINE: other processes used 1.25 of 2 cores" in text and f"pytest (pid {A}, 12.0 s CPU)" in text
    assert "NOT a clean figure" in text and "load average below 0.5" in text


def test_high_load_average_at_the_start_is_busy() -> None:
    start = snap(0, 3.2, 100, {ME: (1, "python", 0)})
    end = snap(10, 1.7, 110, {ME: (1, "python", 10)})
    r = assess(start, end, cores=2, me=ME)
    assert r.busy and r.reasons == ["the 1-min load average was 3.2 on 2 cores at the start (1.7 at the end)"]
    assert "3.2 on 2 cores" in load.start_warning(start, cores=2)
    assert load.start_warning(snap(0, 0.3, 0, {}), cores=2) == ""


def test_a_real_competitor_is_measured() -> None:
    """A spinning process outside this process tree (double fork: its parent exits) shows as load."""
    spin = "import time\nt = time.time()\nwhile time.time() - t < 1.5: pass"
    proc = subprocess.Popen(["/bin/sh", "-c", f'"{sys.executable}" -c "{spin}" >/dev/null 2>&1 & echo $!'], stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    pid = int(proc.communicate()[0])
    start = load.snapshot()
    time.sleep(1.0)
    r = assess(start, load.snapshot())
    assert r.others_cores is not None and r.others_cores >= 0.5, r
    assert pid in start.procs and pid not in load._descendants(os.getpid(), start.procs)


def _rows() -> list[dict]:
    def row(contender: str, median: float, ok: bool = True) -> dict:
        return {"workload": "unet-small", "input_shape": [1, 3, 64, 64], "dtype": "float32", "device": "cpu",
                "contender": contender, "median_ms": median, "min_ms": median, "max_ms": median, "setup_s": 0.0,
                "speedup_vs_eager": 10 / median, "parity_ok": ok, "note": "",
                "parity": {"max_abs": 0.0, "rel_l2": 0.0, "argmax_agreement": 1.0}}  # fmt: skip

    return [row("eager", 10), row("eager-cl", 4), row("compile", 6), row("onnxruntime", 5),
            row("openvino", 1, ok=False), row("unet_fast-cpu", 2.5), row("unet_fast-torch", 7.5)]  # fmt: skip


def test_ratio_to_the_fastest_peer() -> None:
    """The fastest peer is the quickest compiler/runtime with parity ok: not eager-cl (the reference's own
    speed), not OpenVINO (parity FAIL); the ratio is a latency ratio like the README's last column."""
    rows = _rows()
    add_peer_ratios(rows)
    by = {r["contender"]: r for r in rows}
    assert by["unet_fast-cpu"]["fastest_peer"] == "onnxruntime" and by["unet_fast-cpu"]["vs_fastest_peer"] == 0.5
    assert by["unet_fast-torch"]["vs_fastest_peer"] == 1.5 and "vs_fastest_peer" not in by["compile"]
    table = format_text_table(rows).splitlines()
    assert "/ fastest peer" in table[0] and "0.50x" in table[7] and "1.50x" in table[8]
    assert peer_ratio_lines(rows)[0] == ("unet-small 1x3x64x64: unet_fast-cpu / fastest peer (onnxruntime, 5.0 ms) "
                                         "= 0.50x  (latency ratio: below 1 is faster)")  # fmt: skip
    alone = [r for r in _rows() if r["contender"] in ("eager", "unet_fast-cpu")]
    add_peer_ratios(alone)
    assert "no peer of compile, onnxruntime, openvino, tensorrt, mnn, mnn-normal, ncnn ran" in peer_ratio_lines(alone)[0]


QUICK = ["bench", "--quick", "--threads", "1", "--repeats", "1", "--warmup", "0"]


@pytest.mark.parametrize("busy", [True, False], ids=["busy", "quiet"])
def test_bench_warns_and_records(busy: bool, tmp_path, monkeypatch, capsys) -> None:
    pytest.importorskip("onnxruntime")
    me = os.getpid()
    snaps = iter([snap(0, 2.4 if busy else 0.1, 0, {me: (1, "python", 0), C: (1, "other-job", 0)}),
                  snap(20, 2.6 if busy else 0.1, 30 if busy else 2, {me: (1, "python", 2),
                                                                     C: (1, "other-job", 28 if busy else 0)})])  # fmt: skip
    monkeypatch.setattr(load, "snapshot", lambda: next(snaps))
    from unet_fast.bench import workloads

    monkeypatch.setattr(workloads, "unavailable_workloads", lambda: {"smp-resnet34": "not installed (test)"})
    code = main([*QUICK, "--contenders", "eager,onnxruntime", "--backends", "torch", "--out", str(tmp_path),
                 "--machine-name", "box"])  # fmt: skip
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0, out
    assert "unet_fast-torch / fastest peer (onnxruntime" in out
    assert "benchmarks/run_all.sh MACHINE_NAME" in out
    assert "smp-resnet34" not in out, "a workload nobody asked for"
    doc = json.loads(next(tmp_path.glob("box-*.json")).read_text())
    md = next(tmp_path.glob("box-*.md")).read_text()
    assert doc["machine"]["load"]["busy"] is busy and all(r["machine_busy"] is busy for r in doc["rows"])
    assert doc["workloads_unavailable"] == {"smp-resnet34": "not installed (test)"}  # recorded, not printed
    if busy:
        assert "WARNING: BUSY MACHINE: other processes used 1.40 of" in out
        assert f"other-job (pid {C}, 28.0 s CPU)" in out and "NOT a clean figure" in out
        assert "WARNING: the 1-min load average is 2.4" in captured.err
        assert "**Warning: the machine was busy" in md and "load during the run: **BUSY" in md
    else:
        assert "BUSY" not in out and "load: quiet" in out
        assert "load during the run: quiet" in md
