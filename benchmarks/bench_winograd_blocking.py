"""The Winograd conv's blocking against the plan's (issue 25): every 3x3 layer of unet64 run by
`conv3x3_winograd` at each (tiles per block, output channels per GEMM chunk) setting, 0 = the plan's automatic
choice (winograd_kernels.h make_plan), medians, the best setting per layer beside the automatic one.

    python benchmarks/bench_winograd_blocking.py [--size 256] [--threads 1] [--repeats 5]
        [--tile-blocks 0,8,12,16,24,32] [--cout-chunks 0,32,64,128] [--layers enc0.conv2,dec0.conv2]

The layer's tile is the engine's (bench_winograd.engine_tile: F(6x6) from 64 px up, else F(4x4)). At 1 thread
the clock is the calling thread's CPU time, else wall time. Settings alternate within each repeat, so load
bursts hit them alike. Times in ms; the last column lists every setting as tile_block/cout_chunk:ms.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_winograd import engine_tile, unet_layers

from unet_fast.kernels.cpu_winograd import conv3x3_winograd, pack_winograd_weight


def ints(s: str) -> list[int]:
    return [int(v) for v in s.split(",")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tile-blocks", type=ints, default=[0, 8, 12, 16, 24, 32])
    ap.add_argument("--cout-chunks", type=ints, default=[0, 32, 64, 128])
    ap.add_argument("--layers", default="", help="comma-separated layer names (default: every 3x3 layer)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock = time.thread_time if args.threads == 1 else time.perf_counter
    wanted = set(args.layers.split(",")) - {""}
    settings = list(itertools.product(args.tile_blocks, args.cout_chunks))
    if (0, 0) not in settings:
        settings.insert(0, (0, 0))
    g = torch.Generator().manual_seed(0)
    print(f"# unet64-{args.size}, {args.threads} thread(s), median of {args.repeats}, ms")
    print(
        "| layer | HxW | Cin -> Cout | tile | plan's | best (tile_block/cout_chunk) | best / plan's | every setting |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, hw, cins, cout in unet_layers(args.size):
        cin = sum(cins)
        tile = engine_tile(hw, cin, cout)
        if not tile or (wanted and name not in wanted):  # the stem runs as a direct conv
            continue
        xs = [torch.randn(1, hw, hw, c, generator=g) for c in cins]  # NHWC views of a virtual concat
        w = torch.randn(cout, cin, 3, 3, generator=g) * (2 / (9 * cin)) ** 0.5
        packed = pack_winograd_weight(w, tile=tile)
        bias = torch.randn(cout, generator=g)
        out = torch.empty(1, hw, hw, cout)
        samples: dict[tuple[int, int], list[float]] = {s: [] for s in settings}
        for _ in range(args.repeats):
            for tb, cc in settings:
                kw = dict(padding=1, act="relu", out=out, tile_block=tb, cout_chunk=cc)
                conv3x3_winograd(xs, packed, bias, **kw)  # warm: scratch and caches
                t0 = clock()
                conv3x3_winograd(xs, packed, bias, **kw)
                samples[(tb, cc)].append((clock() - t0) * 1e3)
        med = {k: statistics.median(v) for k, v in samples.items()}
        best = min(med, key=med.__getitem__)
        every = " ".join(f"{k[0]}/{k[1]}:{v:.1f}" for k, v in sorted(med.items()))
        print(f"| {name} | {hw} | {cin} -> {cout} | F({tile}x{tile}) | {med[(0, 0)]:.2f} | {best[0]}/{best[1]} "
              f"{med[best]:.2f} | {med[best] / med[(0, 0)]:.2f} | {every} |", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
