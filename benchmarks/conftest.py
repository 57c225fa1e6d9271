"""pytest-benchmark suite: `pytest benchmarks/ --benchmark-only` (not part of CI's `python -m pytest`).

One module per workload family, contenders as parameters. Every case prepares its contender (export and
compile time recorded), checks parity against the fp32 PyTorch reference on the same random input, then
times it with pytest-benchmark's pedantic mode (fixed rounds, warm-up). Parity goes into the benchmark's
extra_info and a case whose output is outside the parity limits FAILS after its timing is recorded.
Contenders that cannot run here are skipped with the reason (see `-rs`).

bf16 cases (test_unet64.py `*_bf16`): the bf16 comparison of issue 17 at whatever --bench-dtype says:
unet_fast cpu bf16, eager and torch.compile bf16 channels_last, OpenVINO at its default precision, and the
fp32 reference rows (ONNX Runtime, OpenVINO pinned f32); extra_info records each row's `precision`.

Options: --bench-threads N (default: all cores, for every contender), --bench-rounds, --bench-warmup,
--bench-contenders a,b, --bench-dtype, --bench-full (adds the batch-4 and other long cases),
--bench-results DIR (write the rows as <machine>-<date>-suite.json/.md/.png there), --bench-machine NAME,
--bench-note TEXT, --bench-kernels (adds the per-kernel micro-benchmarks of benchmarks/kernels/)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

from unet_fast.bench.contenders import CONTENDERS, DTYPE_NAMES, Settings, get_contender
from unet_fast.bench.reference import reference_output
from unet_fast.bench.runner import check_parity, make_row, prepare_for_device, resolve_threads
from unet_fast.bench.workloads import get_workload

ALL_CONTENDERS = list(CONTENDERS)
_ROWS: list[dict] = []
_CASES: dict[tuple, tuple] = {}
_WORKDIR = tempfile.TemporaryDirectory(prefix="unet-fast-benchmarks-")


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("unet_fast benchmarks")
    g.addoption(
        "--bench-threads", type=int, default=None, help="threads for every contender (default: all cores)"
    )
    g.addoption("--bench-rounds", type=int, default=3, help="timed rounds per case (median reported)")
    g.addoption("--bench-warmup", type=int, default=1, help="untimed warm-up calls per case")
    g.addoption("--bench-contenders", default=None, help="comma-separated contenders (default: all)")
    g.addoption("--bench-dtype", default="float32", choices=tuple(DTYPE_NAMES.values()))
    g.addoption("--bench-full", action="store_true", help="also the long cases (batch 4 at 512x512)")
    g.addoption("--bench-results", default=None, help="folder to write the suite's rows, table and plot")
    g.addoption("--bench-machine", default=None, help="machine label for the results files")
    g.addoption("--bench-note", default="", help="conditions to record, e.g. 'taken while 3 other jobs ran'")
    g.addoption("--bench-kernels", action="store_true",
                help="also collect the per-kernel micro-benchmarks benchmarks/kernels/bench_*.py")  # fmt: skip


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    """benchmarks/kernels/bench_*.py (the kernel owners' micro-benchmarks) join `pytest benchmarks/` with
    --bench-kernels; a file named on the command line is collected by pytest itself (no duplicate)."""
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_") and file_path.parent.name == "kernels"
            and parent.config.getoption("--bench-kernels") and not parent.session.isinitpath(file_path)):  # fmt: skip
        return pytest.Module.from_parent(parent, path=file_path)
    return None


_MACHINE: dict = {}


def pytest_configure(config: pytest.Config) -> None:
    from unet_fast.bench.machine import machine_record

    torch.set_num_threads(resolve_threads(config.getoption("--bench-threads")))
    _MACHINE.update(machine_record())  # at the start: the commit and load that the numbers belong to


def settings(config: pytest.Config, workload_key: str, dtype: torch.dtype | None = None) -> Settings:
    """The case's settings: `dtype` when the case fixes one (the bf16 cases), else --bench-dtype."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = dtype or getattr(torch, config.getoption("--bench-dtype"))
    workdir = Path(_WORKDIR.name) / workload_key  # the ONNX export is shared by ORT/OpenVINO/TensorRT
    return Settings(device, dtype, torch.get_num_threads(), workdir)


def case(workload: str, batch: int | None) -> tuple:
    """(model, input, reference) built once per session and workload/batch."""
    key = (workload, batch)
    if key not in _CASES:
        w = get_workload(workload)
        model, x = w.build(), w.make_input(batch, seed=0)
        _CASES[key] = (model, x, reference_output(model, x))
    return _CASES[key]


@pytest.fixture
def run_case(benchmark, request):
    """run_case(workload, contender, batch=None, dtype=None): prepare, check parity, time, record. dtype
    None: --bench-dtype; a contender outside that dtype's default selection (openvino-default in an fp32
    case: it would be a bf16 row) skips with the reason."""
    config = request.config

    def run(workload: str, contender: str, batch: int | None = None, dtype: torch.dtype | None = None) -> dict:
        wanted = config.getoption("--bench-contenders")
        if wanted and contender not in wanted.split(","):
            pytest.skip(f"{contender} not selected (--bench-contenders)")
        s = settings(config, f"{workload}-b{batch}", dtype)
        c = get_contender(contender)
        if not c.in_default(s.dtype):
            pytest.skip(f"{contender}: not part of the {DTYPE_NAMES[s.dtype]} cases (it runs in the bf16 cases)")
        why = c.check(s)
        if why:
            pytest.skip(f"{contender}: {why}")
        model, x, reference = case(workload, batch)
        p = prepare_for_device(c, model, x, s)
        parity = check_parity(p, reference, config.getoption("--bench-warmup"))
        call = p.run
        if s.device == "cuda":  # pytest-benchmark's clock is the host's: wait for the GPU in the call

            def call() -> None:
                p.run()
                torch.cuda.synchronize()

        def timed() -> None:
            with torch.inference_mode():
                call()

        benchmark.group = f"{workload} {'x'.join(map(str, x.shape))} {DTYPE_NAMES[s.dtype]}"
        benchmark.pedantic(timed, rounds=config.getoption("--bench-rounds"), warmup_rounds=0, iterations=1)
        samples = [t * 1e3 for t in benchmark.stats.stats.data]
        row = make_row(workload, tuple(x.shape), s.dtype, s.device, contender, s.threads, samples,
                       config.getoption("--bench-warmup"), p, parity, None)  # fmt: skip
        benchmark.extra_info.update(
            {k: row[k] for k in ("precision", "parity", "parity_ok", "setup_s", "threads", "note")}
        )
        _ROWS.append(row)
        lim_ok = row["parity_ok"]
        assert lim_ok, f"{contender} on {workload}: output outside the parity limits: {row['parity']}"
        return row

    return run


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    out = session.config.getoption("--bench-results", default=None)
    if not out or not _ROWS:
        return
    from unet_fast.bench.machine import default_machine_name
    from unet_fast.bench.results import build_document, results_stem, write_results

    def key(r: dict) -> tuple:  # eager's row of the same case and run dtype (not fp32 eager for a bf16 row)
        return r["workload"], tuple(r["input_shape"]), r["dtype"]

    eager = {key(r): r["median_ms"] for r in _ROWS if r["contender"] == "eager"}
    for r in _ROWS:
        e = eager.get(key(r))
        r["speedup_vs_eager"] = e / r["median_ms"] if e else None
    name = session.config.getoption("--bench-machine") or default_machine_name()
    doc = build_document([{"workload": "suite", "rows": _ROWS, "skipped": {}, "failed": {}}], _MACHINE, name,
                         session.config.getoption("--bench-note"), {"source": "pytest benchmarks/"})  # fmt: skip
    # a suite that ran only bf16 cases (run_all.sh --dtype bfloat16 --suite) gets its own file name
    bf16_only = {r["dtype"] for r in _ROWS} == {"bfloat16"}
    paths = write_results(doc, Path(out), results_stem(name) + ("-bf16-suite" if bf16_only else "-suite"))
    print("\nbenchmark suite results: " + ", ".join(map(str, paths.values())), file=os.sys.stderr)
