"""F(6x6, 3x3) against F(4x4, 3x3) per conv shape (issue 25): the measurement behind
`cpu_winograd.F6_MAX_WORK_RATIO`, the size rule that picks the tile per conv from its output size.

    python benchmarks/bench_winograd_tiles.py [--isa avx512] [--repeats 5] [--threads 1] [--json FILE]

For each output size H = W and channel count Cin = Cout (U-Net-like pairs, the work capped so the sweep takes
about a minute): conv + bias + ReLU, padding 1, batch 1, both tiles in alternation within each round
(interleaved), median CPU time of the calling thread at 1 thread (other processes' time slices do not inflate
it; at more threads, process CPU time). Prints F(6x6) / F(4x4) time beside r = `gemm_work_ratio` (F(6x6)'s
GEMM multiplies over F(4x4)'s) and each tile's rel-L2 against float64, and what the size rule picks.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

from unet_fast.bench.machine import machine_record
from unet_fast.kernels import spec
from unet_fast.kernels.cpu_winograd import (
    available_isas,
    conv3x3_winograd,
    f6_decision,
    gemm_work_ratio,
    pack_winograd_weight,
)

SIZES = (16, 24, 32, 40, 48, 56, 64, 96, 128)
CHANNELS = (64, 128, 256, 512, 1024)
MAX_WORK = 64 * 64 * 512 * 512  # H W Cin Cout of the biggest shape run (64 px 512 -> 512)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--isa", default=None, help="kernel variant (default: the best this CPU runs)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--accuracy", action="store_true", help="also rel-L2 against float64 (slow at 1024 channels)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    isa = args.isa or available_isas()[-1]
    torch.set_num_threads(args.threads)
    clock = time.thread_time if args.threads == 1 else time.process_time
    rows = []
    print(f"# isa {isa}, {args.threads} thread(s), median of {args.repeats} interleaved rounds, CPU ms")
    print("| out px | Cin = Cout | r | F(4x4) ms | F(6x6) ms | F(6x6) / F(4x4) | rule picks |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    g = torch.Generator().manual_seed(0)
    for hw in SIZES:
        for c in CHANNELS:
            if hw * hw * c * c > MAX_WORK:
                continue
            x = torch.randn(1, hw, hw, c, generator=g).relu()
            w = torch.randn(c, c, 3, 3, generator=g) * (2.0 / (9 * c)) ** 0.5
            b = 0.1 * torch.randn(c, generator=g)
            packed = {t: pack_winograd_weight(w, isa=isa, tile=t) for t in (4, 6)}
            out = torch.empty(1, hw, hw, c)
            for t in (4, 6):  # warm: scratch grown, pages touched
                conv3x3_winograd([x], packed[t], b, padding=1, act="relu", out=out)
            ms: dict[int, list[float]] = {4: [], 6: []}
            for r in range(args.repeats):
                for t in (4, 6) if r % 2 == 0 else (6, 4):
                    c0 = clock()
                    conv3x3_winograd([x], packed[t], b, padding=1, act="relu", out=out)
                    ms[t].append((clock() - c0) * 1e3)
            med = {t: statistics.median(v) for t, v in ms.items()}
            row = {"hw": hw, "channels": c, "r": gemm_work_ratio((hw, hw)), "f4_ms": med[4], "f6_ms": med[6],
                   "ratio": med[6] / med[4], "rule": "F(4x4)" if f6_decision((hw, hw)) else "F(6x6)"}  # fmt: skip
            if args.accuracy:
                ref = spec.conv2d([x.double()], w.double(), b.double(), padding=1, act="relu")
                for t in (4, 6):
                    got = conv3x3_winograd([x], packed[t], b, padding=1, act="relu")
                    row[f"f{t}_rel_l2"] = ((got.double() - ref).norm() / ref.norm()).item()
            rows.append(row)
            print(f"| {hw} | {c} | {row['r']:.2f} | {med[4]:.2f} | {med[6]:.2f} | {row['ratio']:.2f} | {row['rule']} |"
                  + (f" rel-L2 F4 {row['f4_rel_l2']:.1e} F6 {row['f6_rel_l2']:.1e}" if args.accuracy else ""),
                  flush=True)  # fmt: skip
    m = machine_record()
    print(f"\n# load average (1, 5, 15 min) at the end: {os.getloadavg()}; commit {m['commit']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"isa": isa, "threads": args.threads, "repeats": args.repeats, "machine": m, "rows": rows}, f,
                      indent=1, default=str)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
