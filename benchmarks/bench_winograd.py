"""Per-layer benchmark of the Winograd F(4x4, 3x3) conv (unet_fast.kernels.cpu_winograd) on the 3x3 layers
of `unet64-256` (or `unet64-512`): Winograd vs torch F.conv2d channels_last (oneDNN) vs the measured sgemm
peak, same threads, medians, and each layer's accuracy (relative L2 against float64) beside its speed.

    python benchmarks/bench_winograd.py [--workload unet64-256] [--threads 2] [--repeats 7] [--json FILE]

Contenders alternate within each repeat, so a busy machine slows both alike; report the ratios and say
the machine was loaded (the JSON records the 1-minute load average). On a very busy machine,
`--threads 1 --clock thread` times the CPU time of the calling thread (both contenders then run on it),
which other processes' time slices do not inflate. Effective GFLOP/s = direct-conv FLOPs
(2 * N * Ho * Wo * Cin * Cout * 9) / time, for both contenders.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from unet_fast.bench.machine import machine_record
from unet_fast.kernels import spec
from unet_fast.kernels.cpu_winograd import (
    available_isas,
    conv3x3_winograd,
    f6_decision,
    pack_winograd_weight,
    winograd_decision,
)


def unet_layers(size: int, base: int = 64, depth: int = 4) -> list[tuple[str, int, list[int], int]]:
    """(name, H=W, input channels per view, Cout) of every 3x3 conv of the reference U-Net (same padding);
    the decoder's first conv reads [skip, upsampled] as a virtual concat."""
    layers = []
    cin, hw = 3, size
    for lvl in range(depth + 1):
        c = base << lvl
        name = f"enc{lvl}" if lvl < depth else "bottleneck"
        layers += [(f"{name}.conv1", hw, [cin], c), (f"{name}.conv2", hw, [c], c)]
        cin, hw = c, hw // 2
    for lvl in reversed(range(depth)):
        c, hw = base << lvl, size >> lvl
        layers += [(f"dec{lvl}.conv1", hw, [c, c], c), (f"dec{lvl}.conv2", hw, [c], c)]
    return layers


def engine_tile(hw: int, cin: int, cout: int) -> int:
    """The output tile the cpu engine runs an H = W = hw same-padded 3x3 conv with: 0 where it is a direct conv
    (cpu_winograd.winograd_decision: too few input channels), else 6 where f6_decision takes its output size,
    else 4."""
    if winograd_decision((cout, cin, 3, 3)):
        return 0
    return 4 if f6_decision((hw, hw)) else 6


def rel_l2(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got.double() - ref.double()).norm() / ref.double().norm()).item()


def sgemm_peak(n: int, repeats: int, clock=time.perf_counter) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    samples = []
    for _ in range(repeats):
        t0 = clock()
        a @ b
        samples.append(clock() - t0)
    return 2 * n**3 / statistics.median(samples) / 1e9


def bench_layer(
    hw: int, cins: list[int], cout: int, repeats: int, isa: str | None, clock=time.perf_counter
) -> dict:
    xs = [torch.randn(1, hw, hw, c).relu() for c in cins]  # post-ReLU activations, like a real U-Net
    cin = sum(cins)
    w = torch.randn(cout, cin, 3, 3) * (2.0 / (9 * cin)) ** 0.5
    b = 0.1 * torch.randn(cout)
    packed = pack_winograd_weight(w, isa=isa)
    out = torch.empty(1, hw, hw, cout)
    x_cat = torch.cat(xs, dim=3).permute(0, 3, 1, 2)  # NCHW view of NHWC memory = channels_last
    ref = spec.conv2d([x.double() for x in xs], w.double(), b.double(), padding=1, act="relu")
    contenders = {
        "winograd": lambda: conv3x3_winograd(xs, packed, b, padding=1, act="relu", out=out),
        "torch_cl": lambda: F.conv2d(x_cat, w, b, padding=1).relu_(),
    }
    err_w = rel_l2(contenders["winograd"](), ref)
    err_t = rel_l2(contenders["torch_cl"]().permute(0, 2, 3, 1), ref)
    samples: dict[str, list[float]] = {k: [] for k in contenders}
    for r in range(repeats):
        order = list(contenders) if r % 2 == 0 else list(reversed(contenders))
        for k in order:
            t0 = clock()
            contenders[k]()
            samples[k].append((clock() - t0) * 1e3)
    flops = 2 * hw * hw * cin * cout * 9
    row = {"hw": hw, "cin": cins, "cout": cout, "gflop": flops / 1e9,
           "rel_l2_winograd": err_w, "rel_l2_torch_fp32": err_t}  # fmt: skip
    for k, s in samples.items():
        med = statistics.median(s)
        row[k] = {"median_ms": med, "min_ms": min(s), "max_ms": max(s), "gflops": flops / med / 1e6}
    row["ratio"] = row["winograd"]["median_ms"] / row["torch_cl"]["median_ms"]
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", choices=("unet64-256", "unet64-512"), default="unet64-256")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--sgemm", type=int, default=4096, help="size of the sgemm that measures the peak")
    ap.add_argument(
        "--isa", default=None, help="CPU kernel variant (unet_fast.kernels.cpu_isa), default: auto"
    )
    ap.add_argument(
        "--clock", choices=("wall", "thread"), default="wall", help="thread: CPU time, --threads 1"
    )
    ap.add_argument("--layers", default="", help="comma-separated substrings of layer names to run")
    ap.add_argument("--json", type=Path, default=None, help="write the rows and the machine record here")
    args = ap.parse_args(argv)
    if not available_isas():
        print("unet_fast._C has no Winograd kernel: rebuild the extension", file=sys.stderr)
        return 1
    if args.clock == "thread" and args.threads != 1:
        ap.error("--clock thread measures the calling thread only: use it with --threads 1")
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    if args.isa and args.isa != "auto" and args.isa not in available_isas():
        ap.error(f"--isa {args.isa}: this CPU runs {available_isas()}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    size = int(args.workload.split("-")[1])
    layers = [
        lay
        for lay in unet_layers(size)
        if not args.layers or any(s in lay[0] for s in args.layers.split(","))
    ]
    machine = machine_record()
    print(f"# {machine['cpu']}, {args.threads} threads, {args.clock} clock, load avg {machine['load_average_1min']}, "
          f"winograd isa {args.isa or 'auto'} of {available_isas()}")  # fmt: skip
    peak = sgemm_peak(args.sgemm, 3, clock)
    print(f"sgemm {args.sgemm}^3: {peak:.1f} GFLOP/s (median of 3)\n")
    print("| layer | HxW | Cin -> Cout | winograd ms (min-max) | torch cl ms (min-max) | ratio | "
          "wino eff. GFLOP/s (x peak) | torch GFLOP/s (x peak) | rel-L2 wino | rel-L2 torch |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for name, hw, cins, cout in layers:
        row = bench_layer(hw, cins, cout, args.repeats, args.isa, clock) | {"layer": name}
        rows.append(row)
        wi, to = row["winograd"], row["torch_cl"]
        print(f"| {name} | {hw} | {'+'.join(map(str, cins))} -> {cout} | {wi['median_ms']:.2f} "
              f"({wi['min_ms']:.2f}-{wi['max_ms']:.2f}) | {to['median_ms']:.2f} ({to['min_ms']:.2f}-"
              f"{to['max_ms']:.2f}) | {row['ratio']:.2f} | {wi['gflops']:.0f} ({wi['gflops'] / peak:.2f}) | "
              f"{to['gflops']:.0f} ({to['gflops'] / peak:.2f}) | {row['rel_l2_winograd']:.1e} | "
              f"{row['rel_l2_torch_fp32']:.1e} |", flush=True)  # fmt: skip
    tw = sum(r["winograd"]["median_ms"] for r in rows)
    tt = sum(r["torch_cl"]["median_ms"] for r in rows)
    print(f"\nall {len(rows)} 3x3 convs: winograd {tw:.1f} ms, torch channels_last {tt:.1f} ms, ratio {tw / tt:.2f}; "
          f"worst rel-L2 {max(r['rel_l2_winograd'] for r in rows):.1e}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "sgemm_gflops": peak, "sgemm_size": args.sgemm,
                                         "threads": args.threads, "clock": args.clock, "rows": rows}, indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
