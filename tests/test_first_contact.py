"""benchmarks/gpu/first_contact.py, the prepared GPU run of issue 22, proven here on the CPU with --dry-run:
every stage runs (the machine probe, setup.py, the GPU test selection with the GPU run's pytest flags, the
Triton interpreter on one kernel test, probe tests that pass / fail / outlast their timeout, the sanitizer
stage with a fake compute-sanitizer that reports findings, a tiny benchmark on the cpu backend with a
torch.compile row that hits its cap), results are written as files the device tool brings back (at most 8,
flat, each < 16 MiB), and the second run (--only-failed) re-runs exactly the failures."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu" / "first_contact.py"
PROBES = "benchmarks/gpu/fc_probe_tests.py"

pytestmark = pytest.mark.slow
# The dry run rehearses the GPU run where there is no GPU (its GPU tests must skip); with one, run the real one.
no_gpu = pytest.mark.skipif(
    torch.cuda.is_available(), reason="a CUDA device is here: run first_contact.py itself"
)


def _load():
    spec = importlib.util.spec_from_file_location("first_contact", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fc = _load()


def _run(out: Path, *args: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(out), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})  # fmt: skip


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("first-contact")
    proc = _run(out, "--dry-run", env={"FC_FAKE_SANITIZER_ERRORS": "2"})
    doc = json.loads((out / "results.json").read_text())
    return out, doc, proc


@no_gpu
def test_outdir_holds_what_the_device_tool_brings_back(dry_run) -> None:
    out, doc, proc = dry_run
    files = sorted(p.name for p in out.iterdir())
    assert set(files) == set(fc.OUT_FILES) and len(files) <= 8, files  # flat: no folders, no temp files
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", f) for f in files)
    assert all((out / f).stat().st_size < 16 * 2**20 for f in files)
    assert doc["schema"] == fc.SCHEMA and doc["mode"] == "dry-run" and doc["finished_utc"]
    summary = (out / "summary.md").read_text()
    for section in ("## Stages", "## Tests", "## compute-sanitizer", "## Benchmarks", "## Second run"):
        assert section in summary, summary
    assert proc.returncode == 1, "the probe failure and the sanitizer findings make the run report problems"
    assert "stages with problems: tests, sanitizer" in proc.stdout, proc.stdout[-3000:]


@no_gpu
def test_every_stage_ran(dry_run) -> None:
    _, doc, proc = dry_run
    st = {k: v["status"] for k, v in doc["stages"].items()}
    assert st == {"machine": "ok", "build": "ok", "tests": "failed", "sanitizer": "failed", "bench": "partial"}, (
        st, proc.stdout[-4000:])  # fmt: skip
    assert doc["machine"]["probe"]["torch"] and doc["machine"]["probe"]["cuda_available"] is False
    b = doc["build"]
    assert b["rc"] == 0 and b["extensions"]["cpu"] is True
    assert "UNET_FAST_CUDA_ARCHS=90" in b["command"] and "setup.py build_ext --inplace" in b["note"]


@no_gpu
def test_tests_stage_collects_every_failure_and_the_gpu_selection_skips_here(dry_run) -> None:
    _, doc, _ = dry_run
    res = doc["tests"]["results"]
    probe = {n.split("::")[1]: r["outcome"] for n, r in res.items() if n.startswith(PROBES)}
    # the failure did not stop the run; the hung test was cut by the per-test timeout (its worker replaced)
    assert probe == {"test_probe_passes": "passed", "test_probe_fails_on_purpose": "failed",
                     "test_probe_outlasts_the_timeout": "failed"}, probe  # fmt: skip
    assert "Timeout" in res[f"{PROBES}::test_probe_outlasts_the_timeout"]["message"] or "crashed" in res[
        f"{PROBES}::test_probe_outlasts_the_timeout"]["message"]  # fmt: skip
    gpu_run = next(r for r in doc["tests"]["runs"] if r["name"] == "gpu")
    assert (
        "--timeout=" in gpu_run["command"]
        and " -n 2 " in gpu_run["command"]
        and "-m gpu" in gpu_run["command"]
    )
    gpu = {n: r for n, r in res.items() if r["run"] == "gpu" and not n.startswith(PROBES)}
    assert len(gpu) > 300, "the GPU selection collected too few tests"
    bad = {n: r["outcome"] for n, r in gpu.items() if r["outcome"] != "skipped"}
    assert not bad, f"without a GPU every GPU test must skip cleanly: {bad}"
    assert gpu_run["counts"]["not run"] == 0
    interp = {n: r["outcome"] for n, r in res.items() if r["run"] == "interpreter"}
    assert interp == {fc.INTERPRETER_TEST: "passed"}


@no_gpu
def test_sanitizer_stage_reports_findings(dry_run) -> None:
    _, doc, _ = dry_run
    s = doc["sanitizer"]
    assert "fake" in s["note"]
    (r,) = s["runs"]
    assert r["status"] == "errors" and r["errors"] == 2 and r["rc"] == 86  # FC_FAKE_SANITIZER_ERRORS=2
    assert r["forwards"] and all(f["ok"] for f in r["forwards"]), r["forwards"]


@no_gpu
def test_bench_rows_have_parity_and_efficiency_and_compile_is_capped(dry_run) -> None:
    _, doc, _ = dry_run
    b = doc["bench"]
    rows = {r["variant"]: r for r in b["rows"]}
    assert set(rows) == {"eager-cl", "unet_fast-cpu"}, (rows.keys(), b["failed"], b["skipped"])
    for r in rows.values():
        assert r["parity_ok"] and r["repeats"] == 3 and r["median_ms"] > 0
        assert r["model_gflop"] > 0 and 0 < r["fraction_of_peak"] < 1 and r["roofline_floor_ms"] > 0
    skipped = {s["variant"]: s["reason"] for s in b["skipped"]}
    assert "CUDA graphs need a CUDA device" in skipped["eager-cl+graphs"]
    assert "CUDA graphs need a CUDA device" in skipped["unet_fast-cpu+graphs"]
    assert (
        "exceeded its 4 s cap" in skipped["compile"] and "exceeded its 4 s cap" in skipped["compile+graphs"]
    )
    assert not b["failed"]


@no_gpu
def test_only_failed_reruns_exactly_the_failures(dry_run, tmp_path: Path) -> None:
    out, _, _ = dry_run
    proc = _run(tmp_path, "--dry-run", "--stages", "tests", "--only-failed", str(out / "results.json"))
    doc = json.loads((tmp_path / "results.json").read_text())
    got = {n: r["outcome"] for n, r in doc["tests"]["results"].items()}
    assert got == {f"{PROBES}::test_probe_fails_on_purpose": "passed",
                   f"{PROBES}::test_probe_outlasts_the_timeout": "passed"}, (got, proc.stdout[-3000:])  # fmt: skip
    assert proc.returncode == 0 and doc["stages"]["bench"]["status"] == "not selected"


@no_gpu
def test_a_stage_that_no_longer_fits_is_skipped_and_said(tmp_path: Path) -> None:
    proc = _run(tmp_path, "--dry-run", "--stages", "machine,bench", "--budget", "12", timeout=120)
    doc = json.loads((tmp_path / "results.json").read_text())
    for stage in ("machine", "bench"):
        assert (
            doc["stages"][stage]["status"] == "skipped" and "no time left" in doc["stages"][stage]["reason"]
        )
    assert doc["stages"]["tests"]["status"] == "not selected"
    assert "no time left" in (tmp_path / "summary.md").read_text() and proc.returncode == 0


@no_gpu
def test_absent_sanitizer_is_a_skip_with_the_reason(tmp_path: Path) -> None:
    proc = _run(tmp_path, "--dry-run", "--stages", "sanitizer", "--sanitizer", "/nonexistent/compute-sanitizer",
                timeout=120)  # fmt: skip
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["stages"]["sanitizer"]["status"] == "skipped" and proc.returncode == 0
    assert "compute-sanitizer not found" in doc["sanitizer"]["reason"]


@no_gpu
def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    for args, why in ((["--stages", "tests,warp"], "unknown stages"), (["--only-failed", "nope.json"], "not a file"),
                      (["--cap", "tests=soon"], "STAGE=SECONDS")):  # fmt: skip
        proc = _run(tmp_path, "--dry-run", *args, timeout=60)
        assert proc.returncode == 2 and why in proc.stderr, proc.stderr


def test_gpu_run_selection_and_build_command_match_the_repository() -> None:
    """Every test file that marks GPU tests lies under the paths the GPU run selects; the build command
    uses setup.py's own switches; each GPU bench job names a workload and variants that exist."""
    marked = {p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").rglob("test_*.py")
              if re.search(r"pytest\.mark\.gpu|\brequires_gpu\b", p.read_text())}  # fmt: skip
    outside = sorted(p for p in marked if not p.startswith(fc.GPU_TEST_PATHS))
    assert marked and not outside, f"GPU tests outside {fc.GPU_TEST_PATHS}: {outside}"
    cfg = fc.gpu_config()
    assert cfg["build_cmd"][1:] == ["setup.py", "build_ext", "--inplace"]
    setup = (ROOT / "setup.py").read_text()
    assert "UNET_FAST_CUDA_ARCHS" in setup and "MAX_JOBS" in setup and "UNET_FAST_CUDA_BUILD" in setup
    from unet_fast.bench.contenders import CONTENDERS
    from unet_fast.bench.workloads import get_workload

    for job in cfg["bench_jobs"]:
        get_workload(job["workload"])
        for v in job["variants"]:
            base = v.removesuffix("+graphs")
            assert base in CONTENDERS or base in ("unet_fast-triton", "unet_fast-cuda"), v
    keys = [j["key"] for j in cfg["bench_jobs"] if j["kind"] == "main"]
    assert keys[:3] == [
        "unet64-512/b16/bf16",
        "unet64-512/b1/bf16",
        "unet-original/b1/fp16",
    ]  # the targets first
    assert len(keys) == 12 and len(set(keys)) == 12  # 3 workloads x batch 1, 16 x fp16, bf16
