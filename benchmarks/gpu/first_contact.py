#!/usr/bin/env python3
"""First contact with a GPU (issue 22): one prepared command that proves and measures the Triton and CUDA
engine on a lent GPU machine within one short window, writing what it has as it goes.

    python3 benchmarks/gpu/first_contact.py OUTDIR                      # the whole run: < 8 min on an H200
    python3 benchmarks/gpu/first_contact.py OUTDIR --dry-run            # every stage on this CPU (CI runs it)
    python3 benchmarks/gpu/first_contact.py OUTDIR --only-failed OLD/results.json   # the short second run

Stages, in order, each under a deadline taken from one budget (`--budget`, default 420 s); a stage that
no longer fits is skipped and the summary says so:
  machine    nvidia-smi (clocks, driver), versions, GPU properties, a measured bf16 matmul and copy rate
  build      MAX_JOBS=<cores> UNET_FAST_CUDA_ARCHS=<the GPU's arch> python setup.py build_ext --inplace
  tests      pytest -m gpu over the GPU test paths with UNET_FAST_TEST_ON_GPU=1 (compiled Triton, no
             interpreter), pytest-xdist, a per-test timeout (pytest-timeout); every failure is collected
  sanitizer  compute-sanitizer memcheck and racecheck on one small forward per GPU backend
  bench      unet64-256, unet64-512, unet-original at batch 1 and 16, fp16 and bf16: eager channels_last,
             torch.compile (its own capped process), unet_fast triton and cuda, each with and without CUDA
             graphs; parity of every row against the fp32 PyTorch reference; fraction of the dense peak
OUTDIR gets at most 8 flat files, rewritten as the run goes (a run killed at its limit still returns what
it measured): summary.md, results.json, run.log, machine.log, build.log, tests.log, sanitizer.log,
bench.log. docs/gpu_first_contact.md says how to call it on the lent machine and where results go.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SCHEMA = "unet_fast.gpu_first_contact/1"
STAGES = ("machine", "build", "tests", "sanitizer", "bench")
OUT_FILES = ("summary.md", "results.json", "run.log", "machine.log", "build.log", "tests.log", "sanitizer.log",
             "bench.log")  # fmt: skip
MAX_LOG_BYTES = 12 * 2**20  # each file that comes back must stay under 16 MiB
FINAL_RESERVE_S = 10.0  # kept at the end of the budget for the last writes

# Where the GPU tests live; `-m gpu` picks them out (tests/test_first_contact.py checks that no test file
# outside these paths carries the marker, so a new GPU test cannot be missed by this run).
GPU_TEST_PATHS = ("tests/kernels", "tests/engine", "tests/backends", "tests/export")
# The dry run's subset of them: collecting all four folders twice (two xdist workers) takes most of a
# minute on CI's 2 cores; the kernel and engine GPU tests are where GPU mode changes what runs.
DRY_RUN_GPU_PATHS = ("tests/kernels/triton", "tests/kernels/cuda", "tests/engine/test_gpu_engine.py")
PROBE_TESTS = "benchmarks/gpu/fc_probe_tests.py"
INTERPRETER_TEST = (
    "tests/kernels/triton/test_triton_small_ops.py::test_maxpool2x2_reads_a_slot_default_config"
)


# -------------------------------------------------------------------------------------------------------
# The run's configuration: the GPU run and the dry run differ only in these values
# -------------------------------------------------------------------------------------------------------


def gpu_config() -> dict:
    cores = os.cpu_count() or 1
    main = ("unet_fast-triton", "unet_fast-triton+graphs", "unet_fast-cuda", "unet_fast-cuda+graphs", "eager-cl",
            "eager-cl+graphs")  # fmt: skip
    # The issue's three targets first (their peers' compile rows right after), then the rest of the matrix.
    targets = [("unet64-512", 16, "bfloat16"), ("unet64-512", 1, "bfloat16"), ("unet-original", 1, "float16")]
    rest = [(w, b, d) for w in ("unet64-256", "unet64-512", "unet-original") for b in (1, 16)
            for d in ("bfloat16", "float16") if (w, b, d) not in targets]  # fmt: skip
    jobs = [_job(w, b, d, main) for w, b, d in targets] + [_job(w, b, d, ("compile", "compile+graphs"))
                                                          for w, b, d in targets]  # fmt: skip
    jobs += [_job(w, b, d, main) for w, b, d in rest] + [
        _job(w, b, d, ("compile", "compile+graphs")) for w, b, d in rest
    ]
    return {
        "mode": "gpu",
        "budget_s": 420.0,
        # cap: the most a stage may take; min: the least worth starting it with (kept free for it)
        "caps": {"machine": 40.0, "build": 170.0, "tests": 130.0, "sanitizer": 45.0, "bench": 1e9},
        "mins": {"machine": 5.0, "build": 30.0, "tests": 30.0, "sanitizer": 20.0, "bench": 40.0},
        "build_cmd": [sys.executable, "setup.py", "build_ext", "--inplace"],
        "test_runs": [
            {
                "name": "gpu",
                "args": [*GPU_TEST_PATHS, "-m", "gpu"],
                "workers": max(1, min(8, cores // 2)),
                "env": {"UNET_FAST_TEST_ON_GPU": "1"},
            }
        ],
        "test_timeout_s": 90,
        # after the last result: time for pytest to end on its own (xdist waits for a replacement worker)
        "test_end_grace_s": 20.0,
        "sanitizer": shutil.which("compute-sanitizer")
        or _first_existing("/usr/local/cuda/bin/compute-sanitizer"),
        # the tensor-core kernels (shared memory, cp.async) in fp16 first; fp32 (the SIMT conv) if time is left
        "sanitizer_runs": [
            ("memcheck", "cuda", "float16"),
            ("memcheck", "triton", "float16"),
            ("racecheck", "cuda", "float16"),
            ("racecheck", "triton", "float16"),
            ("memcheck", "cuda", "float32"),
            ("racecheck", "cuda", "float32"),
            ("memcheck", "triton", "bfloat16"),
        ],
        "sanitizer_models": ["transpose-bn-softmax", "bilinear-logits"],
        "sanitizer_run_cap_s": 45.0,
        "device": "cuda",
        "bench_jobs": jobs,
        "bench_repeats": 20,
        "bench_warmup": 3,
        "bench_min_row_s": 6.0,
        # a first row compiles every Triton kernel of its dtype and autotunes every layer: minutes are a hang
        "bench_stall_s": 180.0,
        "compile_cap_s": 100.0,
    }


def dry_run_config() -> dict:
    """The same stages on this CPU, small: the interpreter for one tiny kernel test, probe tests that pass,
    fail and time out, a fake sanitizer, a tiny model on the torch / cpu backends, a compile row that hits
    its cap and a job the deadline skips."""
    tiny = {"size": [64, 64]}
    return {
        "mode": "dry-run",
        # generous: a quiet 2-core machine needs about a minute; a shared one several times that
        "budget_s": 400.0,
        "caps": {"machine": 60.0, "build": 60.0, "tests": 150.0, "sanitizer": 60.0, "bench": 120.0},
        "mins": {"machine": 2.0, "build": 2.0, "tests": 5.0, "sanitizer": 5.0, "bench": 5.0},
        # setup.py's own code runs (sources found, options parsed); compiling is left out (the extensions of
        # this checkout are already built, and CI's 2 cores would take minutes)
        "build_cmd": [sys.executable, "setup.py", "--name"],
        "test_runs": [
            # the GPU run's selection and flags (GPU mode, -m gpu, xdist, per-test timeout) on the kernel and
            # engine GPU tests, which must all skip cleanly here, plus the probe tests (pass, fail, time out)
            {
                "name": "gpu",
                # the probes first: the worker their timeout kills is replaced while the rest runs
                "args": [PROBE_TESTS, *DRY_RUN_GPU_PATHS, "-m", "gpu"],
                "workers": 2,
                "env": {"UNET_FAST_TEST_ON_GPU": "1", "FC_PROBE": "1", "FC_PROBE_SLEEP": "60"},
            },
            {
                "name": "interpreter",
                "args": [INTERPRETER_TEST],
                "workers": 1,
                "env": {"TRITON_INTERPRET": "1"},
            },
        ],
        "test_timeout_s": 6,
        "test_end_grace_s": 5.0,
        "sanitizer": str(HERE / "fc_fake_sanitizer.py"),
        "sanitizer_runs": [("memcheck", "torch", "float32")],
        "sanitizer_models": ["transpose-bn-softmax"],
        "sanitizer_run_cap_s": 60.0,
        "device": "cpu",
        "bench_jobs": [
            _job(
                "unet-small",
                2,
                "float32",
                ("eager-cl", "eager-cl+graphs", "unet_fast-cpu", "unet_fast-cpu+graphs"),
                **tiny,
            ),
            _job("unet-small", 2, "float32", ("compile", "compile+graphs"), **tiny),
        ],
        "bench_repeats": 3,
        "bench_warmup": 1,
        "bench_min_row_s": 1.0,
        "bench_stall_s": 120.0,
        "compile_cap_s": 4.0,
    }


def _job(
    workload: str, batch: int, dtype: str, variants: tuple[str, ...], size: list[int] | None = None
) -> dict:
    kind = "compile" if variants and variants[0].startswith("compile") else "main"
    short = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}[dtype]
    key = f"{workload}/b{batch}/{short}" + (f"/{size[0]}x{size[1]}" if size else "")
    return {"key": key, "workload": workload, "batch": batch, "dtype": dtype, "size": size, "variants": list(variants),
            "kind": kind}  # fmt: skip


def _first_existing(*paths: str) -> str | None:
    return next((p for p in paths if Path(p).exists()), None)


# -------------------------------------------------------------------------------------------------------
# Writers: capped logs, results.json and summary.md rewritten after every change
# -------------------------------------------------------------------------------------------------------


class Log:
    """An append-only text log that stops at MAX_LOG_BYTES (saying so) and is flushed on every write."""

    def __init__(self, path: Path, echo: bool = False) -> None:
        self.path, self.echo, self.size, self.lock = path, echo, 0, threading.Lock()
        self.file = path.open("a", encoding="utf-8", errors="replace")

    def write(self, text: str) -> None:
        with self.lock:
            if self.echo:
                sys.stdout.write(text)
                sys.stdout.flush()
            if self.size >= MAX_LOG_BYTES:
                return
            if self.size + len(text) >= MAX_LOG_BYTES:
                text = text[: MAX_LOG_BYTES - self.size] + f"\n[log capped at {MAX_LOG_BYTES} bytes]\n"
            self.size += len(text)
            self.file.write(text)
            self.file.flush()

    def line(self, text: str) -> None:
        self.write(f"[{time.strftime('%H:%M:%S')}] {text}\n")


class Run:
    """The state of one run: configuration, clock, results document and writers."""

    def __init__(self, out: Path, cfg: dict, args: argparse.Namespace) -> None:
        self.out, self.cfg, self.args = out, cfg, args
        self.t0 = time.monotonic()
        self.budget = float(args.budget if args.budget is not None else cfg["budget_s"])
        self.scratch = Path(
            args.scratch or (Path(os.environ.get("TMPDIR", "/tmp")) / f"first-contact-{os.getpid()}")
        )
        self.scratch.mkdir(parents=True, exist_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        self.logs = {name: Log(out / f"{name}.log", echo=name == "run") for name in
                     ("run", "machine", "build", "tests", "sanitizer", "bench")}  # fmt: skip
        self.save_lock = threading.Lock()
        self.doc: dict = {
            "schema": SCHEMA, "mode": cfg["mode"], "argv": sys.argv, "budget_s": self.budget,
            "started_utc": _utc(), "finished_utc": None, "elapsed_s": 0.0, "commit": _commit(),
            "stages": {s: {"status": "pending"} for s in STAGES}, "machine": {}, "build": {},
            "tests": {"runs": [], "results": {}}, "sanitizer": {"runs": []},
            "bench": {"jobs": {}, "rows": [], "skipped": [], "failed": []}, "notes": [],
        }  # fmt: skip

    # -- clock ------------------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self) -> float:
        return self.budget - self.elapsed()

    # -- writers ----------------------------------------------------------------------------------------
    def log(self, text: str) -> None:
        self.logs["run"].line(text)

    def save(self) -> None:
        with self.save_lock:
            self.doc["elapsed_s"] = round(self.elapsed(), 1)
            _write_atomic(self.out / "results.json", json.dumps(self.doc, indent=1, default=str) + "\n")
            _write_atomic(self.out / "summary.md", render_summary(self.doc))


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _commit() -> str:
    """The commit measured: UNET_FAST_COMMIT if the caller states it (the lent machine may get the tree
    without .git), else git's, else 'unknown'."""
    if os.environ.get("UNET_FAST_COMMIT"):
        return os.environ["UNET_FAST_COMMIT"]
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()  # fmt: skip
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git here; set UNET_FAST_COMMIT)"


# -------------------------------------------------------------------------------------------------------
# Subprocesses under a deadline
# -------------------------------------------------------------------------------------------------------


def child_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("TRITON_INTERPRET", None)  # set per run where wanted, never inherited by accident
    env.update(extra or {})
    return env


def run_logged(cmd: list[str], log: Log, timeout_s: float, env: dict | None = None,
               poll: Callable[[], bool | str | None] | None = None, grace_s: float = 20.0) -> dict:  # fmt: skip
    """Run cmd (its own process group), its output into `log`; past timeout_s: SIGINT to the group (pytest
    then writes its summary), SIGKILL 15 s later. `poll` runs every 0.5 s; when it returns True (all the
    results are in) a process still running `grace_s` later is interrupted the same way (pytest-xdist waits for
    the replacement of a crashed worker to start before it ends); when it returns "stall", at once. Returns rc,
    seconds, timed_out, stopped_after_results."""
    log.line("$ " + shlex.join(cmd))
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env or child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, text=True, errors="replace")  # fmt: skip
    except OSError as e:
        log.line(f"could not start: {e}")
        return {"rc": None, "seconds": 0.0, "timed_out": False, "error": str(e)}

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timed_out, interrupted_at, done_at, stopped = False, None, None, False
    while proc.poll() is None:
        state = _safe(poll, log)
        if state is True and done_at is None:
            done_at = time.monotonic()
        now = time.monotonic()
        if interrupted_at is None and state == "stall":
            stopped, interrupted_at = True, now
            log.line(f"no progress: interrupting (SIGINT to process group {proc.pid})")
            _signal_group(proc, signal.SIGINT)
        elif interrupted_at is None and done_at is not None and now - done_at > grace_s:
            stopped, interrupted_at = True, now
            log.line(
                f"every result is in but the process runs on: interrupting (SIGINT to process group {proc.pid})"
            )
            _signal_group(proc, signal.SIGINT)
        elif interrupted_at is None and now - t0 > timeout_s:
            timed_out, interrupted_at = True, now
            log.line(
                f"deadline: {timeout_s:.0f} s reached, interrupting (SIGINT to process group {proc.pid})"
            )
            _signal_group(proc, signal.SIGINT)
        elif interrupted_at is not None and now - interrupted_at > 15:
            log.line(f"still running 15 s after SIGINT: SIGKILL to process group {proc.pid}")
            _signal_group(proc, signal.SIGKILL)
            interrupted_at = float("inf")
        time.sleep(0.5)
    _signal_group(proc, signal.SIGKILL)  # what it left behind in its group (xdist or Inductor workers)
    reader.join(timeout=5)
    _safe(poll, log)
    seconds = time.monotonic() - t0
    log.line(f"exit {proc.returncode} after {seconds:.1f} s" + (" (deadline)" if timed_out else ""))
    return {
        "rc": proc.returncode,
        "seconds": round(seconds, 1),
        "timed_out": timed_out,
        "stopped_after_results": stopped,
    }


def _safe(poll: Callable[[], bool | str | None] | None, log: Log) -> bool | str | None:
    """poll(), with its errors logged: a bad record must not leave the subprocess running unwatched."""
    if poll is None:
        return None
    try:
        return poll()
    except Exception as e:
        log.line(f"(error while reading results: {type(e).__name__}: {e})")
        return None


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the group this run started (start_new_session), nothing else
    except ProcessLookupError:
        pass


class JsonLines:
    """Reads the complete lines appended to a file since the last call."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0

    def new(self) -> list[dict]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self.offset += end
        out = []
        for raw in data[:end].splitlines():
            try:
                out.append(json.loads(raw))
            except ValueError:
                continue
        return out


# -------------------------------------------------------------------------------------------------------
# Stages
# -------------------------------------------------------------------------------------------------------


def stage_machine(run: Run, allowed: float) -> str:
    log, m = run.logs["machine"], run.doc["machine"]
    smi = shutil.which("nvidia-smi")
    if smi:
        fields = ("name,driver_version,pci.bus_id,memory.total,clocks.sm,clocks.max.sm,clocks.mem,clocks.max.mem,"
                  "clocks.applications.graphics,power.draw,power.limit,temperature.gpu,pstate,compute_mode,"
                  "persistence_mode,mig.mode.current")  # fmt: skip
        q = _capture([smi, f"--query-gpu={fields}", "--format=csv"], 20)
        m["nvidia_smi"] = _csv(q)
        log.write(q + "\n")
        log.write(_capture([smi, "-q", "-d", "CLOCK,PERFORMANCE,POWER,TEMPERATURE"], 20) + "\n")
        log.write(_capture([smi, "topo", "-m"], 10) + "\n")
    else:
        m["nvidia_smi"] = "nvidia-smi not found"
    for tool in ("nvcc", "compute-sanitizer", "ncu", "g++"):
        path = shutil.which(tool)
        m.setdefault("tools", {})[tool] = (
            _capture([path, "--version"], 20).strip().splitlines()[-1:] if path else None
        )
    m["python"] = sys.version.split()[0]
    m["cores"] = os.cpu_count()
    try:
        m["disk_free_gib"] = round(shutil.disk_usage(ROOT).free / 2**30, 1)
    except OSError:
        pass
    res = run_logged([sys.executable, str(HERE / "fc_probe.py")], log, max(5.0, allowed - 5))
    probe = _last_json(run.out / "machine.log")
    if probe:
        m["probe"] = probe
        dev = probe.get("device")
        run.log(f"machine: {dev['name'] if dev else 'no CUDA device'}; torch {probe.get('torch')} (CUDA "
                f"{probe.get('torch_cuda')}), triton {probe['versions'].get('triton')}; "
                + (f"bf16 matmul {probe['measured']['matmul_bf16_tflops']:.0f} TFLOP/s, copy "
                   f"{probe['measured']['copy_tb_s']:.2f} TB/s" if probe.get("measured") else "no measured ceilings"))  # fmt: skip
    if probe and run.cfg["device"] == "cuda" and not probe.get("cuda_available"):
        run.doc["stages"]["machine"]["note"] = (
            "torch sees no CUDA device: the GPU stages cannot prove anything"
        )
        return "failed"
    return "ok" if res["rc"] == 0 and probe else "failed"


def _capture(cmd: list[str], timeout: float) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return (p.stdout + p.stderr).strip()
    except (OSError, subprocess.SubprocessError) as e:
        return f"{shlex.join(cmd)}: {type(e).__name__}: {e}"


def _csv(text: str) -> list[dict] | str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) < 2 or "," not in lines[0]:
        return text
    keys = [k.strip() for k in lines[0].split(",")]
    return [dict(zip(keys, (v.strip() for v in ln.split(",")), strict=False)) for ln in lines[1:]]


def _last_json(path: Path) -> dict | None:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for ln in reversed(lines):
        if ln.startswith("{"):
            try:
                return json.loads(ln)
            except ValueError:
                continue
    return None


def gpu_arch(run: Run) -> str:
    dev = (run.doc["machine"].get("probe") or {}).get("device")
    return str(dev["arch"]) if dev else "90"


def stage_build(run: Run, allowed: float) -> str:
    env = {"MAX_JOBS": str(os.cpu_count() or 2), "UNET_FAST_CUDA_ARCHS": gpu_arch(run)}
    if run.cfg["mode"] == "gpu":
        env["UNET_FAST_CUDA_BUILD"] = "1"  # no nvcc must be an error there, not a silent CPU-only build
        if (
            not shutil.which("nvcc")
            and not os.environ.get("CUDA_HOME")
            and Path("/usr/local/cuda/bin/nvcc").exists()
        ):
            env["CUDA_HOME"] = "/usr/local/cuda"  # setup.py looks on PATH and in CUDA_HOME
    b = run.doc["build"]
    b["command"] = " ".join(f"{k}={v}" for k, v in env.items()) + " " + shlex.join(run.cfg["build_cmd"])
    if run.cfg["mode"] == "dry-run":
        b["note"] = ("dry run: setup.py's code runs (`setup.py --name`); the extensions are not rebuilt. The "
                     "GPU run executes: " + b["command"].replace("--name", "build_ext --inplace"))  # fmt: skip
    res = run_logged(run.cfg["build_cmd"], run.logs["build"], allowed, child_env(env))
    b.update(res)
    check = ("import json, torch; from unet_fast import _ext; print(json.dumps({'cpu': _ext.cpu_ext is not None, "
             "'cuda_reason': _ext.cuda_unavailable_reason(), 'build_info': _ext.build_info()}))")  # fmt: skip
    out = _capture([sys.executable, "-c", check], 60)
    run.logs["build"].write(out + "\n")
    try:
        b["extensions"] = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        b["extensions"] = {"error": out[-2000:]}
    ext = b["extensions"]
    run.log(
        f"build: rc {res['rc']} in {res['seconds']} s; _C {'imports' if ext.get('cpu') else 'MISSING'}; "
        f"_cuda: {ext.get('cuda_reason') or 'usable'}"
    )
    if res["timed_out"]:
        return "timeout"
    return "ok" if res["rc"] == 0 else "failed"


def pytest_args(run: Run, args: list[str], workers: int) -> tuple[list[str], list[str]]:
    """The pytest command for `args` and notes on what was left out (a missing plugin)."""
    cmd = [sys.executable, "-m", "pytest", *args, "-p", "fc_reportlog", "-p", "no:cacheprovider", "-v", "-rfE",
           "--tb=short", "-W", "ignore::DeprecationWarning"]  # fmt: skip
    notes = []
    if importlib.util.find_spec("pytest_timeout"):
        cmd += [f"--timeout={run.cfg['test_timeout_s']}", "--timeout-method=thread"]
    else:
        notes.append("pytest-timeout is not installed: no per-test timeout (the stage deadline still holds)")
    if workers > 1 and importlib.util.find_spec("xdist"):
        cmd += ["-n", str(workers), "--max-worker-restart", "50"]
    elif workers > 1:
        notes.append("pytest-xdist is not installed: tests run in one process")
    return cmd, notes


def failed_nodeids(results_json: Path) -> list[str]:
    """The tests an earlier run did not prove: failed, errors, and collected but never run (its deadline)."""
    doc = json.loads(results_json.read_text())
    tests = doc.get("tests", {})
    res = tests.get("results", {})
    ids = {n for n, r in res.items() if r.get("outcome") in ("failed", "error")}
    for r in tests.get("runs", []):
        ids |= {n for n in r.get("collected_nodeids", []) if n not in res}
    return sorted(ids)


def stage_tests(run: Run, allowed: float) -> str:
    runs = run.cfg["test_runs"]
    if run.args.only_failed:
        ids = failed_nodeids(Path(run.args.only_failed))
        if not ids:
            run.doc["stages"]["tests"]["note"] = f"no failed tests in {run.args.only_failed}"
            return "skipped"
        env = dict(runs[0]["env"])
        if run.cfg["mode"] == "dry-run":  # the probe's failures are on purpose: the rerun proves them fixed
            env.update({"FC_PROBE": "pass-all"})
        runs = [{"name": "only-failed", "args": ids, "env": env, "workers": runs[0]["workers"]}]
    until = time.monotonic() + allowed
    statuses = []
    for spec in runs:
        left = until - time.monotonic()
        record = {"name": spec["name"], "env": spec["env"]}
        run.doc["tests"]["runs"].append(record)
        if left < 5:
            record.update(status="skipped", reason=f"deadline: {left:.0f} s left")
            statuses.append("partial")
            continue
        report = run.scratch / f"reportlog-{spec['name']}.jsonl"
        report.unlink(missing_ok=True)
        cmd, notes = pytest_args(run, spec["args"], spec["workers"])
        record.update(command=shlex.join(cmd), notes=notes)
        poll = _TestPoller(run, JsonLines(report), record, spec["name"])
        env = child_env({**spec["env"], "FC_REPORTLOG": str(report), "OMP_NUM_THREADS": "2"})
        res = run_logged(cmd, run.logs["tests"], left, env, poll, grace_s=run.cfg["test_end_grace_s"])
        record.update(res)
        record["counts"] = c = _counts(run.doc["tests"]["results"], spec["name"], record.get("collected"))
        run.log(f"tests [{spec['name']}]: " + ", ".join(f"{v} {k}" for k, v in c.items() if v) +
                (" (stopped at the deadline)" if res["timed_out"] else ""))  # fmt: skip
        # 5: nothing collected; 2 / -2: interrupted (SIGINT) after every result was in
        ok_rc = res["rc"] in (0, 5) or (res["stopped_after_results"] and res["rc"] in (2, -2))
        statuses.append("timeout" if res["timed_out"] else ("failed" if c.get("failed") or c.get("error") or
                                                            not ok_rc else "ok"))  # fmt: skip
    counts = _counts(run.doc["tests"]["results"], "", None, every_run=True)
    if counts.get("skipped") and not counts.get("passed"):
        run.doc["stages"]["tests"]["note"] = (
            "every test that ran was skipped (see their reasons in results.json)"
        )
    for s in ("timeout", "failed", "partial"):
        if s in statuses:
            return s
    return "ok"


class _TestPoller:
    """Folds the report log's new lines into the results while pytest runs; saves every 5 s."""

    def __init__(self, run: Run, reader: JsonLines, record: dict, name: str) -> None:
        self.run, self.reader, self.record, self.name, self.last_save = run, reader, record, name, 0.0

    def __call__(self) -> bool:
        """True once every collected test has a result."""
        results = self.run.doc["tests"]["results"]
        for r in self.reader.new():
            if "collected" in r:
                self.record["collected"] = r["collected"]
                self.record["collected_nodeids"] = r.get("nodeids", [])
            elif "session_finished" in r:
                self.record["exitstatus"] = r["exitstatus"]
            elif "nodeid" in r:
                results[r["nodeid"]] = {**{k: r[k] for k in ("outcome", "duration_s", "message", "when")},
                                        "run": self.name}  # fmt: skip
        counts = _counts(results, self.name, self.record.get("collected"))
        if time.monotonic() - self.last_save > 5:
            self.record["counts"] = counts
            self.run.save()
            self.last_save = time.monotonic()
        return counts.get("not run") == 0


def _counts(results: dict, name: str, collected: int | None, every_run: bool = False) -> dict:
    c: dict[str, int] = {}
    for r in results.values():
        if every_run or r.get("run") == name:
            c[r["outcome"]] = c.get(r["outcome"], 0) + 1
    if collected is not None:
        c["not run"] = max(0, collected - sum(c.values()))
    return c


_ERRORS = re.compile(r"ERROR SUMMARY: (\d+) error")


def stage_sanitizer(run: Run, allowed: float) -> str:
    tool = run.args.sanitizer or run.cfg["sanitizer"]
    s = run.doc["sanitizer"]
    s["tool"] = tool
    if not tool or not (Path(tool).exists() or shutil.which(tool)):
        s["reason"] = f"compute-sanitizer not found ({tool or 'not on PATH, not in /usr/local/cuda/bin'})"
        run.doc["stages"]["sanitizer"]["note"] = s["reason"]
        run.log(f"sanitizer: skipped: {s['reason']}")
        return "skipped"
    if run.cfg["mode"] == "dry-run" and tool.endswith(".py"):
        s["note"] = "dry run: a fake compute-sanitizer (fc_fake_sanitizer.py) checked nothing"
    prefix = [sys.executable, tool] if tool.endswith(".py") else [tool]
    todo = run.cfg["sanitizer_runs"]
    if run.args.only_failed:
        old = json.loads(Path(run.args.only_failed).read_text()).get("sanitizer", {}).get("runs", [])
        bad = {(r["tool"], r["backend"], r["dtype"]) for r in old if r.get("status") not in ("clean", None)}
        todo = [t for t in todo if t in bad or not old]
    until = time.monotonic() + allowed
    statuses = []
    for name, backend, dtype in todo:
        left = until - time.monotonic()
        rec = {"tool": name, "backend": backend, "dtype": dtype}
        s["runs"].append(rec)
        if left < 10:
            rec.update(status="skipped", reason=f"deadline: {left:.0f} s left")
            statuses.append("partial")
            run.save()
            continue
        cmd = [*prefix, "--tool", name, "--error-exitcode", "86", "--print-limit", "40",
               sys.executable, str(HERE / "fc_sanitize_forward.py"), "--backend", backend, "--dtype", dtype,
               "--device", run.cfg["device"], "--models", ",".join(run.cfg["sanitizer_models"])]  # fmt: skip
        # one cudaMalloc per tensor: memcheck then sees an overrun of a tensor, not only of an allocator pool
        env = child_env({"PYTORCH_NO_CUDA_MEMORY_CACHING": "1"})
        start = run.logs["sanitizer"].size
        res = run_logged(cmd, run.logs["sanitizer"], min(left, run.cfg["sanitizer_run_cap_s"]), env)
        text = (run.out / "sanitizer.log").read_text(errors="replace")[start:]
        m = _ERRORS.findall(text)
        forwards = [json.loads(ln) for ln in text.splitlines() if ln.startswith('{"model"')]
        rec.update(res, errors=int(m[-1]) if m else None, forwards=forwards,
                   findings=[ln for ln in text.splitlines() if ln.startswith("=========") and "SUMMARY" not in ln][:20])  # fmt: skip
        if res["timed_out"]:
            rec["status"] = "timeout"
        elif rec["errors"] is None:
            rec["status"] = "tool-failed"  # no summary line: the tool itself did not run to its end
        elif rec["errors"] > 0:
            rec["status"] = "errors"
        elif res["rc"] != 0 or not all(f.get("ok") for f in forwards):
            rec["status"] = "forward-failed"
        else:
            rec["status"] = "clean"
        statuses.append(rec["status"])
        run.log(
            f"sanitizer {name} {backend} {dtype}: {rec['status']} ({rec['errors']} errors, {res['seconds']} s)"
        )
        run.save()
    if any(st not in ("clean", "partial") for st in statuses):
        return "failed"
    return "partial" if "partial" in statuses else "ok"


def bench_jobs(run: Run) -> list[dict]:
    jobs = run.cfg["bench_jobs"]
    if run.args.bench:
        wanted = set(run.args.bench.split(","))
        jobs = [j for j in jobs if j["key"] in wanted or j["workload"] in wanted]
    return [dict(j) for j in jobs]


def stage_bench(run: Run, allowed: float) -> str:
    b = run.doc["bench"]
    until = time.monotonic() + allowed
    probe = run.doc["machine"].get("probe") or {}
    if run.cfg["device"] == "cuda" and probe.get("cuda_available") is False:
        run.doc["stages"]["bench"]["note"] = (
            "torch sees no CUDA device here (machine stage): nothing to measure"
        )
        return "skipped"
    measured = (probe.get("measured") or {}).get("matmul_bf16_tflops")
    jobs = bench_jobs(run)
    b["plan"] = [{"key": j["key"], "variants": j["variants"]} for j in jobs]
    rows_path = run.scratch / "bench-rows.jsonl"
    reader = JsonLines(rows_path)
    done: set[tuple[str, str]] = set()
    last_progress = [time.monotonic()]

    def fold() -> str | None:
        """Fold new rows into the results; "stall" when the worker wrote nothing for bench_stall_s (a hung
        kernel: the row it was on fails, a fresh worker takes the rest)."""
        changed = False
        for r in reader.new():
            key, variant = r.get("key"), r.get("variant")
            if r["type"] == "job":
                b["jobs"][key] = {k: v for k, v in r.items() if k != "type"}
            elif r["type"] == "row":
                b["rows"].append(r["row"])
                done.add((key, variant))
                row = r["row"]
                run.log(f"bench {key} {variant}: {row['median_ms']:.3f} ms, parity {'ok' if row['parity_ok'] else 'FAIL'}"
                        + (f", {row['fraction_of_peak']:.1%} of peak" if row.get("fraction_of_peak") else ""))  # fmt: skip
            elif r["type"] == "skip":
                b["skipped"].append({"key": key, "variant": variant, "reason": r["reason"]})
                done.add((key, variant))
            elif r["type"] == "fail":
                b["failed"].append(
                    {"key": key, "variant": variant, "error": r["error"], "traceback": r.get("traceback", "")}
                )
                done.add((key, variant))
                run.log(f"bench {key} {variant}: FAILED {r['error'][:200]}")
            changed = True
        if changed:
            last_progress[0] = time.monotonic()
            run.save()
        return "stall" if time.monotonic() - last_progress[0] > run.cfg["bench_stall_s"] else None

    # consecutive main jobs share one worker (its CUDA context, Triton's autotuning); each compile job gets one
    segments: list[list[dict]] = []
    for j in jobs:
        if segments and j["kind"] == "main" and segments[-1][-1]["kind"] == "main":
            segments[-1].append(j)
        else:
            segments.append([j])
    status = "ok"
    for seg in segments:
        restarts = 0
        while True:
            todo = [{**j, "variants": [v for v in j["variants"] if (j["key"], v) not in done]} for j in seg]
            todo = [j for j in todo if j["variants"]]
            if not todo:
                break
            left = until - time.monotonic()
            compile_seg = seg[0]["kind"] == "compile"
            if left < run.cfg["bench_min_row_s"] + 10:
                for j in todo:
                    for v in j["variants"]:
                        b["skipped"].append(
                            {
                                "key": j["key"],
                                "variant": v,
                                "reason": f"deadline: {left:.0f} s left in the run",
                            }
                        )
                        done.add((j["key"], v))
                status = "partial"
                break
            timeout = min(left, run.cfg["compile_cap_s"]) if compile_seg else left
            spec = {"device": run.cfg["device"], "repeats": run.cfg["bench_repeats"], "warmup": run.cfg["bench_warmup"],
                    "min_row_s": run.cfg["bench_min_row_s"], "workdir": str(run.scratch / "bench-work"),
                    "measured_matmul_tflops": measured, "jobs": todo}  # fmt: skip
            jobs_file = run.scratch / "bench-jobs.json"
            jobs_file.write_text(json.dumps(spec))
            # the worker stops starting rows 10 s before the kill; a compile row always starts (its worker's own
            # start-up can take seconds of a small cap): the cap is what stops it, and its row then says so
            deadline = time.time() + (1e9 if compile_seg else max(0.0, timeout - 10))
            cmd = [sys.executable, str(HERE / "fc_bench.py"), "--jobs", str(jobs_file), "--out", str(rows_path),
                   "--deadline", f"{deadline:.1f}"]  # fmt: skip
            env = child_env({"TORCHINDUCTOR_CACHE_DIR": str(run.scratch / "inductor"),
                             "TORCHINDUCTOR_COMPILE_THREADS": str(os.cpu_count() or 1)})  # fmt: skip
            last_progress[0] = time.monotonic()
            res = run_logged(cmd, run.logs["bench"], timeout, env, fold)
            fold()
            if (
                res["stopped_after_results"] and restarts < 3
            ):  # stalled: its current row fails, the rest go on
                stuck = next(
                    ((j["key"], v) for j in todo for v in j["variants"] if (j["key"], v) not in done), None
                )
                if stuck:
                    b["failed"].append({"key": stuck[0], "variant": stuck[1],
                                        "error": f"no progress for {run.cfg['bench_stall_s']:.0f} s: stopped (a hung kernel?)"})  # fmt: skip
                    done.add(stuck)
                restarts += 1
                continue
            if res["timed_out"]:
                why = (f"torch.compile exceeded its {timeout:.0f} s cap (compile time, not a failure of the peer)"
                       if compile_seg else f"the bench stage's deadline ({timeout:.0f} s) was reached")  # fmt: skip
                for j in todo:
                    for v in j["variants"]:
                        if (j["key"], v) not in done:
                            b["skipped"].append({"key": j["key"], "variant": v, "reason": why})
                            done.add((j["key"], v))
                status = "partial"
                break
            if res["rc"] == 3 and restarts < 3:  # a kernel fault poisoned the CUDA context: a fresh worker
                restarts += 1
                run.log(f"bench: worker restarted after a CUDA fault ({restarts})")
                continue
            if res["rc"] != 0:
                for j in todo:
                    for v in j["variants"]:
                        if (j["key"], v) not in done:
                            b["failed"].append(
                                {"key": j["key"], "variant": v, "error": f"worker exited {res['rc']}"}
                            )
                            done.add((j["key"], v))
                status = "failed"
            break
    run.save()
    if b["failed"] or any(not r["parity_ok"] for r in b["rows"]):
        return "failed"
    return status


STAGE_FUNCS: dict[str, Callable[[Run, float], str]] = {
    "machine": stage_machine, "build": stage_build, "tests": stage_tests, "sanitizer": stage_sanitizer,
    "bench": stage_bench,
}  # fmt: skip


def run_stages(run: Run, stages: list[str]) -> None:
    caps, mins = run.cfg["caps"], run.cfg["mins"]
    for s in STAGES:
        if s not in stages:
            run.doc["stages"][s] = {"status": "not selected"}
    for i, name in enumerate(stages):
        later = sum(mins[s] for s in stages[i + 1 :])
        left = run.left() - FINAL_RESERVE_S
        allowed = min(caps[name], left - later)
        st = run.doc["stages"][name]
        if allowed < mins[name]:
            st.update(status="skipped", reason=f"no time left: {left:.0f} s in the budget, {later:.0f} s kept for "
                                               f"later stages, {mins[name]:.0f} s needed")  # fmt: skip
            run.log(f"== {name}: skipped ({st['reason']})")
            run.save()
            continue
        st.update(status="running", allowed_s=round(allowed, 1), started_at_s=round(run.elapsed(), 1))
        run.log(f"== {name} (up to {allowed:.0f} s; {run.left():.0f} s left in the budget)")
        run.save()
        t0 = time.monotonic()
        try:
            st["status"] = STAGE_FUNCS[name](run, allowed)
        except Exception as e:  # one broken stage must not lose the others
            import traceback

            st.update(
                status="crashed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-3000:]
            )
            run.log(f"{name}: CRASHED {type(e).__name__}: {e}")
        st["seconds"] = round(time.monotonic() - t0, 1)
        run.log(f"== {name}: {st['status']} in {st['seconds']} s")
        run.save()


# -------------------------------------------------------------------------------------------------------
# summary.md
# -------------------------------------------------------------------------------------------------------


def render_summary(doc: dict) -> str:
    m = doc.get("machine", {})
    probe = m.get("probe") or {}
    dev = probe.get("device") or {}
    smi = m.get("nvidia_smi")
    smi0 = smi[0] if isinstance(smi, list) and smi else {}
    lines = [f"# GPU first contact: {dev.get('name') or 'no GPU'} ({doc['mode']})", "",
             f"- started {doc['started_utc']}, {'finished ' + doc['finished_utc'] if doc.get('finished_utc') else 'RUNNING or killed'}"
             f", {doc['elapsed_s']:.0f} s of a {doc['budget_s']:.0f} s budget; commit {doc['commit']}",
             f"- command: `{shlex.join(doc['argv'])}`"]  # fmt: skip
    if probe:
        v = probe.get("versions", {})
        lines.append(f"- python {m.get('python')}, torch {probe.get('torch')} (CUDA {probe.get('torch_cuda')}, cuDNN "
                     f"{probe.get('cudnn')}), triton {v.get('triton')}, pytest {v.get('pytest')}, xdist {v.get('xdist')}, "
                     f"pytest-timeout {v.get('pytest_timeout')}")  # fmt: skip
    if dev:
        lines.append(f"- GPU: {dev.get('name')}, sm_{dev.get('arch')}, {dev.get('sms')} SMs, {dev.get('memory_gib')} GiB, "
                     f"L2 {dev.get('l2_mib')} MiB; driver {smi0.get('driver_version', '?')}; SM clock "
                     f"{smi0.get('clocks.current.sm [MHz]', smi0.get('clocks.sm [MHz]', '?'))} (max "
                     f"{smi0.get('clocks.max.sm [MHz]', '?')}); tools: "
                     + ", ".join(f"{k} {'; '.join(v) if v else 'absent'}" for k, v in (m.get("tools") or {}).items()))  # fmt: skip
    if probe.get("measured"):
        me = probe["measured"]
        lines.append(f"- measured here: bf16 {me['matmul_bf16_n']}^3 matmul {me['matmul_bf16_tflops']:.0f} TFLOP/s, "
                     f"device copy {me['copy_tb_s']:.2f} TB/s (read + write)")  # fmt: skip
    lines += [
        "",
        "## Stages",
        "",
        "| stage | status | seconds | allowed s | note |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for name, st in doc["stages"].items():
        note = st.get("reason") or st.get("error") or st.get("note") or ""
        lines.append(
            f"| {name} | {st['status']} | {st.get('seconds', '')} | {st.get('allowed_s', '')} | {note} |"
        )
    b = doc.get("build") or {}
    if b:
        ext = b.get("extensions") or {}
        lines += ["", f"Build: `{b.get('command')}`: rc {b.get('rc')}; _C {'imports' if ext.get('cpu') else 'missing'}; "
                  f"_cuda {ext.get('cuda_reason') or 'usable'}." + (f" {b['note']}" if b.get("note") else "")]  # fmt: skip
    lines += (
        _summary_tests(doc["tests"]) + _summary_sanitizer(doc["sanitizer"]) + _summary_bench(doc["bench"])
    )
    if doc.get("notes"):
        lines += ["", "## Notes", "", *[f"- {n}" for n in doc["notes"]]]
    lines += ["", "## Second run", "",
              "Copy this folder to benchmarks/results/ (docs/gpu_first_contact.md), then re-run only what failed, "
              "plus the benchmark rows:", "",
              "```bash", "python3 benchmarks/gpu/first_contact.py $OUT --only-failed benchmarks/results/<this folder>/results.json",
              "```"]  # fmt: skip
    return "\n".join(lines) + "\n"


def _summary_tests(t: dict) -> list[str]:
    lines = ["", "## Tests", ""]
    if not t.get("runs"):
        return [*lines, "Not run."]
    for r in t.get("runs", []):
        c = r.get("counts") or {}
        lines.append(f"- run `{r['name']}`: " + (", ".join(f"{v} {k}" for k, v in c.items() if v) or r.get("reason", "no results"))
                     + (f" (rc {r.get('rc')}{', stopped at the deadline' if r.get('timed_out') else ''})" if "rc" in r else "")
                     + "".join(f"; {n}" for n in r.get("notes", [])))  # fmt: skip
    failed = sorted((n, r) for n, r in t.get("results", {}).items() if r["outcome"] in ("failed", "error"))
    if failed:
        lines += ["", f"Failed ({len(failed)}):", ""]
        for n, r in failed[:80]:
            msg = next((ln.strip() for ln in reversed(r.get("message", "").splitlines()) if ln.strip().startswith("E ")),
                       (r.get("message", "").strip().splitlines() or [""])[-1])  # fmt: skip
            lines.append(f"- `{n}` ({r['outcome']}): {msg[:240]}")
        if len(failed) > 80:
            lines.append(f"- ... and {len(failed) - 80} more (results.json)")
    by_dir: dict[str, dict[str, int]] = {}
    for n, r in t.get("results", {}).items():
        d = n.split("::")[0].rsplit("/", 1)[0]
        by_dir.setdefault(d, {}).setdefault(r["outcome"], 0)
        by_dir[d][r["outcome"]] += 1
    if by_dir:
        lines += ["", "| test folder | " + " | ".join(OUTCOMES) + " |", "| --- |" + " ---: |" * len(OUTCOMES)]
        for d, c in sorted(by_dir.items()):
            lines.append(f"| {d} | " + " | ".join(str(c.get(o, 0)) for o in OUTCOMES) + " |")
    return lines


OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")


def _summary_sanitizer(s: dict) -> list[str]:
    lines = ["", "## compute-sanitizer", ""]
    if s.get("reason"):
        return [*lines, f"Skipped: {s['reason']}."]
    if not s.get("runs"):
        return [*lines, "Not run."]
    if s.get("note"):
        lines.append(s["note"] + ".")
    if s.get("runs"):
        lines += [
            "",
            "| tool | backend | dtype | status | errors | seconds | forward parity |",
            "| --- | --- | --- | --- | ---: | ---: | --- |",
        ]
        for r in s["runs"]:
            fw = "; ".join(f"{f['model']} {'ok' if f.get('ok') else 'FAIL'}" for f in r.get("forwards", []))
            lines.append(f"| {r['tool']} | {r['backend']} | {r['dtype']} | {r['status']} | {r.get('errors', '')} | "
                         f"{r.get('seconds', '')} | {fw or r.get('reason', '')} |")  # fmt: skip
        for r in s["runs"]:
            for f in r.get("findings", [])[:5]:
                lines.append(f"- {r['tool']} {r['backend']}: `{f[:200]}`")
    return lines


def _summary_bench(b: dict) -> list[str]:
    lines = ["", "## Benchmarks", ""]
    rows = b.get("rows", [])
    if rows:
        jobs = b.get("jobs", {})
        first = next(iter(jobs.values()), {})
        lines += [f"Median of {rows[0]['repeats']} timed calls after warm-up (CUDA events on a GPU); parity of one warm "
                  f"output against {first.get('reference', 'the fp32 PyTorch reference')}; % of peak = model FLOPs "
                  f"(roofline.py) / median / {first.get('peak_source', 'peak')} (a model); % of floor = the fused "
                  "plan's roofline floor / median.", "",
                  "| job | contender | graphs | median ms | min-max ms | rel L2 | argmax | parity | TFLOP/s | % of peak | "
                  "% of floor | setup s | note |", "| --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- |"]  # fmt: skip
        for r in rows:
            p = r["parity"]
            lines.append(f"| {r['job']} | {r['contender_base']} | {'yes' if r['cuda_graphs'] else 'no'} | {r['median_ms']:.3f} | "
                         f"{r['min_ms']:.3f}-{r['max_ms']:.3f} | {p['rel_l2']:.2e} | {p['argmax_agreement']:.4%} | "
                         f"{'ok' if r['parity_ok'] else 'FAIL'} | {r.get('achieved_tflops', 0):.1f} | "
                         f"{r.get('fraction_of_peak', 0):.1%} | {r.get('fraction_of_roofline_floor', 0):.1%} | "
                         f"{r.get('setup_s', 0):.1f} | {r.get('note', '')[:80]} |")  # fmt: skip
        lines += ["", *_target_lines(rows)]
    for title, items, field in (
        ("Failed", b.get("failed", []), "error"),
        ("Not run", b.get("skipped", []), "reason"),
    ):
        if items:
            lines += ["", f"{title} ({len(items)}):", ""]
            lines += [f"- {i['key']} {i['variant']}: {i[field][:240]}" for i in items[:60]]
    if not rows and not b.get("failed") and not b.get("skipped"):
        lines.append("No rows yet.")
    return lines


def _target_lines(rows: list[dict]) -> list[str]:
    """The issue's targets, as measured in this run (figures, not pass/fail tests)."""

    def best(job: str, prefix: str, graphs: bool | None = None) -> dict | None:
        c = [r for r in rows if r["job"] == job and r["contender_base"].startswith(prefix) and r["parity_ok"]
             and (graphs is None or r["cuda_graphs"] == graphs)]  # fmt: skip
        return min(c, key=lambda r: r["median_ms"]) if c else None

    out = []
    for job, what in (("unet64-512/b16/bf16", "target: >= 50% of the dense peak, faster than eager and compile"),
                      ("unet64-512/b1/bf16", "target: <= 1.5 ms with CUDA graphs, faster than both peers"),
                      ("unet-original/b1/fp16", "target: well under NVIDIA's 3.53 ms (A100, TF2+XLA+AMP), ~1.5 ms")):  # fmt: skip
        ours = best(job, "unet_fast-")
        if ours is None:
            continue
        peers = [(n, best(job, n)) for n in ("eager-cl", "compile")]
        text = ", ".join(f"{n} {p['median_ms']:.3f} ms" for n, p in peers if p) or "no peer row"
        out.append(f"- {job}: best unet_fast {ours['contender']} {ours['median_ms']:.3f} ms "
                   f"({ours.get('fraction_of_peak', 0):.1%} of peak); peers: {text} ({what})")  # fmt: skip
    return out


# -------------------------------------------------------------------------------------------------------
# main
# -------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Stages: " + ", ".join(STAGES))  # fmt: skip
    p.add_argument("outdir", type=Path, help="results folder (at most 8 files, flat)")
    p.add_argument("--dry-run", action="store_true", help="every stage on this CPU, small (what CI runs)")
    p.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset, in the fixed order")
    p.add_argument("--only-failed", metavar="FROM_JSON", help="second run: the failed tests and sanitizer runs of "
                   "an earlier results.json, plus the benchmark rows")  # fmt: skip
    p.add_argument("--budget", type=float, help="seconds for the whole run (default 420; dry run 400)")
    p.add_argument(
        "--cap", action="append", default=[], metavar="STAGE=SECONDS", help="override a stage's cap"
    )
    p.add_argument(
        "--bench", help="comma-separated bench job keys or workload names to keep (e.g. unet64-512/b16/bf16)"
    )
    p.add_argument(
        "--sanitizer", help="the compute-sanitizer to use (default: on PATH or /usr/local/cuda/bin)"
    )
    p.add_argument("--scratch", help="scratch folder (default: $TMPDIR/first-contact-<pid>)")
    a = p.parse_args(argv)
    stages = [s.strip() for s in a.stages.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        p.error(f"unknown stages {unknown}; choose from {', '.join(STAGES)}")
    a.stage_list = [s for s in STAGES if s in stages]
    if a.only_failed and not Path(a.only_failed).is_file():
        p.error(f"--only-failed: {a.only_failed} is not a file")
    for c in a.cap:
        k, _, v = c.partition("=")
        if k not in STAGES or not v.replace(".", "", 1).isdigit():
            p.error(f"--cap {c!r}: expected STAGE=SECONDS with STAGE one of {', '.join(STAGES)}")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = dry_run_config() if args.dry_run else gpu_config()
    for c in args.cap:
        k, _, v = c.partition("=")
        cfg["caps"][k] = float(v)
    run = Run(args.outdir, cfg, args)
    run.log(f"first contact ({cfg['mode']}): budget {run.budget:.0f} s, stages {', '.join(args.stage_list)}, "
            f"results in {args.outdir}")  # fmt: skip
    if args.only_failed:
        run.doc["notes"].append(
            f"second run: failed tests and sanitizer runs of {args.only_failed}, plus the bench"
        )
    run.save()
    try:
        run_stages(run, args.stage_list)
    finally:
        smi = shutil.which("nvidia-smi")
        if smi and "machine" in args.stage_list:  # clocks after the load, beside those before it
            run.logs["machine"].write(
                "after the run:\n"
                + _capture(
                    [smi, "--query-gpu=clocks.sm,clocks.max.sm,temperature.gpu,power.draw", "--format=csv"],
                    10,
                )
                + "\n"
            )
            run.doc["machine"]["nvidia_smi_after"] = _csv(
                _capture(
                    [smi, "--query-gpu=clocks.sm,clocks.max.sm,temperature.gpu,power.draw", "--format=csv"],
                    10,
                )
            )
        run.doc["finished_utc"] = _utc()
        run.save()
        shutil.rmtree(run.scratch, ignore_errors=True) if not args.scratch else None
    bad = [s for s, st in run.doc["stages"].items() if st["status"] in ("failed", "crashed", "timeout")]
    run.log(f"done in {run.elapsed():.0f} s; " + (f"stages with problems: {', '.join(bad)}" if bad else "every stage ok")
            + f"; summary: {args.outdir / 'summary.md'}")  # fmt: skip
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
