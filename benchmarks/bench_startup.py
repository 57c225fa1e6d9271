"""Start-up of an engine in a fresh process (issue 26): `optimize()` against `unet_fast.load()` of its engine file
and against a compile-cache hit (`optimize(..., cache_dir=...)` with the entry there), each followed by the first
call and the steady state, on one workload (default unet64-256, lively weights, batch 1, cpu backend).

    python benchmarks/bench_startup.py --machine-name amd-epyc-zen4-2c [--workload unet64-256] [--repeats 5]
        [--threads 1] [--note "..."]

Every measurement is one fresh Python process (`import unet_fast` timed apart): the modes alternate within each
repeat (optimize, load, load without the CRC check, cache hit), so they share the machine's noise; medians over
the repeats with min-max, ratios to optimize in the same run, the 1-minute load average before each process.
The engine file and the cache entry are written once before (by one optimize + save), so the page cache is warm:
what a second process on the same machine sees (a Ray actor, a Serve replica). Targets: load <= 0.3 s, first
call <= 1.5x steady.

Writes benchmarks/results/<machine>-<date>-startup.json and .md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from unet_fast.bench.machine import load_average, machine_record
from unet_fast.bench.results import write_side_results

CHILD = r"""
import json, os, sys, time
t0 = time.perf_counter()
import torch
import unet_fast
t_import = time.perf_counter() - t0
mode, workload, threads, path, cache = sys.argv[1:6]
torch.set_num_threads(int(threads))
from unet_fast.bench.workloads import get_workload
w = get_workload(workload)
x = w.make_input()
t_model = 0.0
if mode in ("optimize", "cache-hit", "cache-miss", "torch-compile"):
    t = time.perf_counter(); model = w.build().eval(); t_model = time.perf_counter() - t
t = time.perf_counter()
if mode == "optimize":
    fast = unet_fast.optimize(model, x, backend="cpu")
elif mode == "save":
    fast = unet_fast.optimize(w.build().eval(), x, backend="cpu")
    t = time.perf_counter()
    unet_fast.save(fast, path)
elif mode == "load":
    fast = unet_fast.load(path)
elif mode == "load-noverify":
    fast = unet_fast.load(path, verify=False)
elif mode in ("cache-hit", "cache-miss"):
    fast = unet_fast.optimize(model, x, backend="cpu", cache_dir=cache)
elif mode == "torch-compile":  # lazy: Dynamo traces and the engine is built at the first call
    fast = torch.compile(model, backend="unet_fast", options={"backend": "cpu"})
t_ready = time.perf_counter() - t
with torch.inference_mode():
    t = time.perf_counter(); y = fast(x); t_first = time.perf_counter() - t
    steady = []
    for _ in range(5):
        t = time.perf_counter(); fast(x); steady.append(time.perf_counter() - t)
if mode == "torch-compile":
    from unet_fast import compile_backend
    graphs = compile_backend.reports()
    assert len(graphs) == 1 and graphs[0].engine, graphs  # one graph, on the engine (not a fallback)
    rep = graphs[0].fused.report_data()
else:
    rep = fast.report_data()
out = {"mode": mode, "import_s": t_import, "model_s": t_model, "ready_s": t_ready, "first_s": t_first,
       "steady_s": sorted(steady)[len(steady) // 2], "cache": None if rep.cache is None else rep.cache.status,
       "repacked": None if rep.artifact is None else rep.artifact.repacked_count,
       "file_mib": os.path.getsize(path) / 2**20 if os.path.exists(path) else None,
       "kernels": sorted({s.isa for s in rep.steps if s.isa})}
print("RESULT " + json.dumps(out))
"""

MODES = ("optimize", "load", "load-noverify", "cache-hit", "torch-compile")


def _child(mode: str, workload: str, threads: int, path: Path, cache: Path) -> dict:
    before = load_average()
    p = subprocess.run([sys.executable, "-c", CHILD, mode, workload, str(threads), str(path), str(cache)],
                       capture_output=True, text=True, timeout=1200)  # fmt: skip
    if p.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{p.stderr[-3000:]}")
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("RESULT "))
    return {**json.loads(line[7:]), "load_average_before": before}


def _stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def _markdown(doc: dict) -> str:
    s = doc["summary"]
    lines = [f"# Engine start-up: {doc['workload']} ({doc['machine_name']})", "",
             f"{doc['machine']['cpu']}, {doc['machine']['cores']} cores, torch {doc['machine']['torch']}, commit "
             f"{doc['machine']['commit']}{' (dirty)' if doc['machine']['dirty'] else ''}; {doc['threads']} torch "
             f"thread(s); {doc['repeats']} fresh processes per mode, modes alternating; {doc['note']}", "",
             f"Engine file: {doc['file_mib']:.1f} MiB (captured program, folded weights, packed weights for "
             f"{', '.join(doc['kernels'])}); written by one optimize + save before the runs ({doc['save_s']:.2f} s "
             "for save).", "",
             "| mode | ready s (median, min-max) | vs optimize | first call s | steady s | first / steady "
             "| ready + first s | import s |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    base = s["optimize"]["ready_s"]["median"]
    for mode in MODES:
        r = s[mode]
        lines.append(f"| {mode} | {r['ready_s']['median']:.3f} ({r['ready_s']['min']:.3f}-{r['ready_s']['max']:.3f}) "
                     f"| {r['ready_s']['median'] / base:.3f}x | {r['first_s']['median']:.3f} | {r['steady_s']['median']:.3f} "
                     f"| {r['first_s']['median'] / r['steady_s']['median']:.2f}x "
                     f"| {r['to_first_s']['median']:.3f} | {r['import_s']['median']:.2f} |")  # fmt: skip
    lines += ["", "ready = from the call (optimize / load / optimize with a cache hit) to an engine that runs, in a fresh "
              "process after `import unet_fast` (import timed apart); optimize excludes building the model "
              f"({s['optimize']['model_s']['median']:.2f} s median), the cache hit includes hashing the model's classes "
              "and weights for the key. first / steady: one call and the median of five more, at the example shape. "
              "load-noverify skips the CRC-32 pass over the weights (load(verify=False)). torch-compile: "
              "`torch.compile(model, backend=\"unet_fast\")` is lazy (ready = the call), Dynamo's trace and the "
              "engine's build are in its first call; it compiles without the cache (the graph Dynamo hands over "
              "has no class source to key). ready + first = the time to the first output.", "",
              f"Load average (1 min) before the processes: {doc['load_min']:.2f}-{doc['load_max']:.2f} on "
              f"{doc['machine']['cores']} cores ({doc['note']})."]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--machine-name", required=True)
    p.add_argument("--workload", default="unet64-256")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--note", default="")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    machine = machine_record()
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        path, cache = Path(tmp) / "engine.ufe", Path(tmp) / "cache"
        saved = _child("save", args.workload, args.threads, path, cache)
        miss = _child("cache-miss", args.workload, args.threads, path, cache)
        assert miss["cache"] == "miss", miss
        runs: dict[str, list[dict]] = {m: [] for m in MODES}
        for i in range(args.repeats):
            for mode in MODES:
                r = _child(mode, args.workload, args.threads, path, cache)
                if mode == "cache-hit":
                    assert r["cache"] == "hit", r
                if mode.startswith("load"):
                    assert r["repacked"] == 0, r
                runs[mode].append(r)
                print(f"repeat {i} {mode}: ready {r['ready_s']:.3f} s, first {r['first_s']:.3f} s, steady "
                      f"{r['steady_s']:.3f} s (load avg {r['load_average_before']})", file=sys.stderr, flush=True)  # fmt: skip
    for rs in runs.values():
        for r in rs:
            r["to_first_s"] = r["ready_s"] + r["first_s"]
    summary = {m: {k: _stats([r[k] for r in rs]) for k in ("import_s", "model_s", "ready_s", "first_s", "steady_s",
                                                           "to_first_s")}
               for m, rs in runs.items()}  # fmt: skip
    loads = [r["load_average_before"] for rs in runs.values() for r in rs if r["load_average_before"] is not None]
    doc = {"machine_name": args.machine_name, "machine": machine, "workload": args.workload, "threads": args.threads,
           "repeats": args.repeats, "note": args.note or "shared machine", "file_mib": saved["file_mib"],
           "save_s": saved["ready_s"], "cache_miss": miss, "kernels": saved["kernels"], "summary": summary,
           "runs": runs, "load_min": min(loads) if loads else float("nan"),
           "load_max": max(loads) if loads else float("nan"),
           "command": "python benchmarks/bench_startup.py " + " ".join(sys.argv[1:] if argv is None else argv)}  # fmt: skip
    write_side_results(doc, _markdown(doc), args.out, args.machine_name, "startup" + ('' if args.workload == 'unet64-256' else '-' + args.workload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
