"""The floor under issue 25's target: how fast `unet64` could run on the cpu backend's algorithms (Winograd
F(6x6) / F(4x4) for the 3x3 convs, a GEMM for the transposed convs) at this CPU's FMA peak, beside what the
engine measures with its transforms and, with the phase-skipping build, without them.

    python benchmarks/winograd_floor.py --peak 117 [--workloads unet64-256,unet64-512] [--repeats 5] [--json F]

    # the GEMM-only column: a build whose Winograd convs skip their input and output transforms (the outputs
    # are garbage: a measuring build, never one to use), then the normal build again
    git apply benchmarks/kernels/winograd_skip_phases.patch && MAX_JOBS=2 python setup.py build_ext --inplace
    python benchmarks/winograd_floor.py --peak 117 --phases
    git apply -R benchmarks/kernels/winograd_skip_phases.patch && MAX_JOBS=2 python setup.py build_ext --inplace

Everything runs at **1 thread** and is timed in CPU time of the calling thread (other processes' time slices do
not inflate it; docs/peers.md says why the 2-thread wall figures of this shared 2-vCPU machine swing), median
of `--repeats` calls after two warm-up calls, each configuration in its own process.

The floor is a **model**, labelled as one: the multiply-adds the engine's algorithms cannot avoid, at
`--peak` GFLOP/s (one core's FMA peak, from benchmarks/kernels/gemm_tile_peak.cpp: 111-118 on Zen 4):
- a 3x3 conv on F(m x m, 3x3): tiles x (m + 2)^2 points x Cin x Cout multiply-adds, tiles = ceil(H / m) x
  ceil(W / m), with m the engine's choice for that conv (cpu_winograd.f6_decision; checked against the plan);
- the 2x2 stride-2 transposed convs: H_in x W_in x Cin x 4 Cout (each input pixel makes a 2x2 output patch);
- the stem (Cin = 3: a direct conv): 9 x Cin x Cout per output pixel;
- the transforms, the pools, the head and every memory access: free.
The engine's time over the floor is then everything the algorithm does besides its multiply-adds at peak.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_winograd import engine_tile, unet_layers

from unet_fast.bench.machine import machine_record

# UF_SKIP bits of the patched build: 2 input transform, 4 output transform (1: the GEMMs)
SKIP_TRANSFORMS = "6"


def floor_ms(size: int, peak_gflops: float) -> dict[str, float]:
    """The model's milliseconds per part of unet64 at input size x size (base 64, depth 4)."""
    wino = stem = 0.0
    for _name, hw, cins, cout in unet_layers(size):
        cin = sum(cins)
        m = engine_tile(hw, cin, cout)
        if not m:  # the stem: the engine runs it as a direct conv
            stem += hw * hw * 9 * cin * cout
            continue
        tiles = (-(-hw // m)) ** 2  # ceil(hw / m) squared
        wino += tiles * (m + 2) ** 2 * cin * cout
    transposed = sum((size >> (lvl + 1)) ** 2 * (128 << lvl) * 4 * (64 << lvl) for lvl in range(4))
    to_ms = 2 / (peak_gflops * 1e9) * 1e3
    parts = {"winograd_gemm": wino * to_ms, "transposed_gemm": transposed * to_ms, "stem": stem * to_ms}
    parts["total"] = sum(parts.values())
    return parts


def child(workload: str, repeats: int) -> None:
    """Time the engine in this process (1 thread, thread CPU time) and print JSON on the last line."""
    import unet_fast
    from unet_fast.bench.workloads import get_workload

    torch.set_num_threads(1)
    w = get_workload(workload)
    model, x = w.build(), w.make_input()
    engine = unet_fast.optimize(model, x, backend="cpu")
    kernels = [s.kernel for s in engine.report_data().steps if s.kind == "Conv"]
    samples = []
    with torch.inference_mode():
        for _ in range(2):
            out = engine(x)
        for _ in range(repeats):
            t0 = time.thread_time()
            engine(x)
            samples.append((time.thread_time() - t0) * 1e3)
    print(json.dumps({"ms": statistics.median(samples), "min_ms": min(samples), "kernels": kernels,
                      "checksum": hashlib.sha1(out.numpy().tobytes()).hexdigest()}))  # fmt: skip


def run_child(workload: str, repeats: int, skip: str | None) -> dict:
    env = None if skip is None else dict(os.environ, UF_SKIP=skip)
    r = subprocess.run([sys.executable, __file__, "--child", workload, "--repeats", str(repeats)],
                       capture_output=True, text=True, env=env, check=True)  # fmt: skip
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peak", type=float, help="one core's FMA peak, GFLOP/s (gemm_tile_peak.cpp)")
    ap.add_argument("--workloads", default="unet64-256,unet64-512")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--phases", action="store_true", help="also time the phase-skipping build (see the docstring)"
    )
    ap.add_argument("--json", type=Path)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.repeats)
        return 0
    if args.peak is None:
        ap.error("--peak is required (one core's FMA peak in GFLOP/s: benchmarks/kernels/gemm_tile_peak.cpp)")
    rows = []
    for workload in args.workloads.split(","):
        size = int(workload.rsplit("-", 1)[1])
        model = floor_ms(size, args.peak)
        full = run_child(workload, args.repeats, None)
        prefix = {0: "cpu.conv2d.direct", 4: "cpu.conv2d.winograd.", 6: "cpu.conv2d.winograd6"}
        expected = [prefix[engine_tile(hw, sum(c), o)] for _n, hw, c, o in unet_layers(size)]
        got = full["kernels"][: len(expected)]
        if len(got) != len(expected) or any(not k.startswith(e) for k, e in zip(got, expected, strict=True)):
            raise SystemExit(f"{workload}: the plan's conv kernels {got} are not the model's {expected}")
        row = {
            "workload": workload,
            "floor_ms": model,
            "engine_ms": full["ms"],
            "engine_min_ms": full["min_ms"],
        }
        if args.phases:
            gemm = run_child(workload, args.repeats, SKIP_TRANSFORMS)
            if gemm["checksum"] == full["checksum"]:
                raise SystemExit("--phases: UF_SKIP changed nothing: build with benchmarks/kernels/"
                                 "winograd_skip_phases.patch applied (see the docstring)")  # fmt: skip
            row["gemm_only_ms"] = gemm["ms"]
        rows.append(row)
    m = machine_record()
    print(f"# 1 thread, CPU time of the calling thread, median of {args.repeats}; {m.get('cpu', '?')}, "
          f"commit {m.get('commit', '?')}, load average {m.get('load_average_1min', '?')}; floor = model at "
          f"{args.peak:g} GFLOP/s")  # fmt: skip
    print("| workload | floor (model) ms: Winograd GEMMs + transposed + stem = total | engine, transforms skipped ms "
          "| engine ms | floor / engine |")  # fmt: skip
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        f = r["floor_ms"]
        g = f"{r['gemm_only_ms']:.1f}" if "gemm_only_ms" in r else "(--phases)"
        print(f"| {r['workload']} | {f['winograd_gemm']:.1f} + {f['transposed_gemm']:.1f} + {f['stem']:.1f} = "
              f"{f['total']:.1f} | {g} | {r['engine_ms']:.1f} | {f['total'] / r['engine_ms']:.2f} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"machine": m, "peak_gflops": args.peak, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
