"""The standalone bf16 ops (unet_fast.kernels.cpu_bf16_ops, issue 17) on `unet64` sizes against what ran these
steps before them: the executor's torch reference in bf16 storage (kernels/spec.py: fp32 math, NHWC views), and
torch's own bf16 channels_last op (what eager bf16 runs). Same threads, medians of `--repeats` timed calls
after one warm-up, wall clock.

    python benchmarks/bench_bf16_ops.py [--size 256] [--threads 1] [--repeats 21] [--isa portable|amx]

Ops: the 2x2 max-pool of the first encoder level (64 channels), the bilinear 2x upsample of the last decoder
level into its concat slot (128 -> 64 + 64 channels, align_corners=False), and the head (64 channels -> 2
classes + softmax / argmax): fused, two-pass, and the reference. The head's 1x1 runs on the tile backend
(`--isa`); on a CPU without AMX that is the portable tile emulator, so its figures there measure the emulator,
not the design.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from unet_fast.kernels import cpu_bf16_ops, spec
from unet_fast.kernels.spec import InputView, Resample


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--isa", default=None, help="tile backend of the head (default: the best this CPU runs)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    s, g = a.size, torch.Generator().manual_seed(0)
    rows: list[tuple[str, float, float, float | None]] = []  # op, ours ms, reference ms, torch eager ms

    x = torch.randn(1, s, s, 64, generator=g).bfloat16()
    pooled = torch.empty(1, s // 2, s // 2, 64, dtype=torch.bfloat16)
    xcl = x.permute(0, 3, 1, 2)  # channels_last NCHW view of the same memory
    rows.append(("maxpool2x2 64ch", median_ms(lambda: cpu_bf16_ops.maxpool2x2(x, pooled), a.repeats),
                 median_ms(lambda: spec.maxpool2x2(x, pooled), a.repeats),
                 median_ms(lambda: F.max_pool2d(xcl, 2), a.repeats)))  # fmt: skip

    low = torch.randn(1, s // 2, s // 2, 64, generator=g).bfloat16()
    cat = torch.empty(1, s, s, 128, dtype=torch.bfloat16)
    view = InputView(low, Resample("bilinear", (s, s)))
    lowcl = low.permute(0, 3, 1, 2)
    rows.append(("bilinear 2x into slot 64ch", median_ms(lambda: cpu_bf16_ops.upsample_concat([view], cat[..., 64:]),
                                                          a.repeats),
                 median_ms(lambda: spec.upsample_concat([view], cat[..., 64:]), a.repeats),
                 median_ms(lambda: F.interpolate(lowcl, size=(s, s), mode="bilinear"), a.repeats)))  # fmt: skip

    w, b = torch.randn(2, 64) * 0.2, torch.randn(2) * 0.1
    packed = cpu_bf16_ops.pack_head_weight(w)
    wcl = w.bfloat16().reshape(2, 64, 1, 1)
    for op in ("softmax", "argmax"):
        out = torch.empty(1, s, s, 2) if op != "argmax" else torch.empty(1, s, s, dtype=torch.int64)
        ref_out = out if op == "argmax" else out.bfloat16()
        logits = functools.partial(F.conv2d, xcl, wcl, b.bfloat16())
        eager = (
            (lambda f=logits: torch.softmax(f(), 1)) if op == "softmax" else (lambda f=logits: f().argmax(1))
        )
        ref_ms = median_ms(functools.partial(spec.head, x, w, b, op, ref_out), a.repeats)
        eager_ms = median_ms(eager, a.repeats)
        for fused in (True, False):
            ours = functools.partial(cpu_bf16_ops.head, x, packed, b, op, out, fused=fused, isa=a.isa)
            rows.append((f"head 64->2 {op} {'fused' if fused else 'two-pass'}", median_ms(ours, a.repeats),
                         ref_ms, eager_ms))  # fmt: skip

    print(f"size {s}, threads {a.threads}, median of {a.repeats}, wall ms")
    print(f"{'op':<30} {'cpu_bf16_ops':>12} {'torch ref':>10} {'eager bf16':>10} {'ref/ours':>8}")
    for name, ours, ref, eager_ms in rows:
        print(f"{name:<30} {ours:12.3f} {ref:10.3f} {eager_ms:10.3f} {ref / ours:8.2f}")


if __name__ == "__main__":
    main()
