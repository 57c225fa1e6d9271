"""Per-layer benchmark of the bf16 tile convolution (unet_fast.kernels.cpu_bf16, issue 17) on the convs of
`unet64-256` (or --size 512): tile conv vs torch's bf16 channels_last conv (oneDNN, which itself uses AMX /
AVX512-BF16 where the CPU has them) vs our fp32 cpu conv (kernels/cpu.py: Winograd where it applies) vs the
measured peak of the tile backend (amx: a tight TDPBF16PS loop; avx512bf16: a register-resident VDPBF16PS
loop), same threads, medians, and each layer's accuracy (rel-L2 against float64 on the same bf16-rounded
operands) beside its speed. The 3x3 layers Winograd can take (Cin >= 16) also time the Winograd conv on bf16
activations (kernels/cpu_winograd.py, fp32 compute), and the total line adds up what the engine runs: per
layer the algorithm the kernel registry picks for this tile backend (cpu_winograd.bf16_gate), so an AMX run checks
that rule with measured figures.

    python benchmarks/bench_amx_bf16.py [--size 256] [--threads 2] [--repeats 5] [--isa amx] [--json FILE]

Run it on a CPU with AMX, or with --isa avx512bf16 on one with AVX512-BF16 (docs/amx_bf16.md). --isa
portable is the tile emulator, a correctness path orders of magnitude slower;
`--isa portable --size 32 --repeats 1 --peak-seconds 0.05` is a smoke test of this script, not a measurement.
Effective GFLOP/s = direct-conv FLOPs (2 N Ho Wo Cin Cout K^2) / time for every contender; "% peak" is
against threads x the one-core peak of the chosen backend. On avx512bf16 the "tile" column is the conv as
the backend runs it: the register-blocked direct conv where it applies (plain / nearest sources, the
transposed conv); `--avx512-path tile` times the tile body instead (path="tile"; the engine's
UNET_FAST_KERNELS=avx512bf16_conv=tile; the before / after comparison of docs/amx_bf16.md).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from unet_fast.kernels import cpu, cpu_bf16, cpu_winograd, registry


def unet_convs(size: int, base: int = 64, depth: int = 4) -> list[tuple[str, int, int, int, int]]:
    """(name, input H=W, Cin, Cout, K) of every conv of the reference U-Net at `size` (K = 2: the 2x2
    stride-2 transposed conv; decoder convs read the concat [skip, upsampled], so Cin = 2 Cout; the head is
    the 1x1 to 2 classes)."""
    layers, cin, hw = [], 3, size
    for lvl in range(depth + 1):
        c = base << lvl
        name = f"enc{lvl}" if lvl < depth else "bottleneck"
        layers += [(f"{name}.conv1", hw, cin, c, 3), (f"{name}.conv2", hw, c, c, 3)]
        cin, hw = c, hw // 2
    for lvl in reversed(range(depth)):
        c, hw = base << lvl, size >> lvl
        layers.append((f"dec{lvl}.up", hw // 2, 2 * c, c, 2))  # the 2x2 stride-2 transposed conv, K = 2
        layers += [(f"dec{lvl}.conv1", hw, 2 * c, c, 3), (f"dec{lvl}.conv2", hw, c, c, 3)]
    layers.append(("head", size, base, 2, 1))
    return layers


def _onednn_conv_relu(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, pad: int) -> torch.Tensor:
    """torch's bf16 conv + ReLU on channels_last tensors: oneDNN, on AMX where the CPU has it."""
    return torch.relu_(F.conv2d(x, w, b, padding=pad))


def _onednn_up_relu(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """torch's bf16 2x2 stride-2 transposed conv + ReLU on channels_last tensors."""
    return torch.relu_(F.conv_transpose2d(x, w, b, stride=2))


def tile_peak_gflops(isa: str, seconds: float) -> float:
    """One core's peak of the backend (cpu_bf16.tile_peak: TDPBF16PS on resident tiles, or VDPBF16PS on
    registers): iters grown until the loop runs `seconds`, best of 3."""
    iters = 1000
    while True:
        t0 = time.perf_counter()
        cpu_bf16.tile_peak(iters, isa=isa)
        dt = time.perf_counter() - t0
        if dt >= seconds:
            break
        iters = int(iters * max(2.0, 1.2 * seconds / max(dt, 1e-6)))
    best = min(_timed(lambda: cpu_bf16.tile_peak(iters, isa=isa)) for _ in range(3))
    return iters * 4 * 16 * 16 * 32 * 2 / best / 1e9


_CLOCK = time.perf_counter  # --clock cpu: time.process_time (CPU seconds of every thread of this process)


def _timed(fn) -> float:
    t0 = _CLOCK()
    fn()
    return _CLOCK() - t0


def _opt(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def rel_l2(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got.double() - ref).norm() / ref.norm())


def _engine_takes_winograd(isa: str) -> bool:
    """Whether an engine on tile backend `isa` runs a 3x3 conv that the Winograd supports on the Winograd on
    bf16 activations (the registry's gate, with UNET_FAST_KERNELS as set)."""
    env = registry.Choices.from_env()
    forced = tuple({**dict(env.forced), "bf16": isa}.items())
    return cpu_winograd.bf16_gate(registry.Context(registry.Choices(env.exact, forced))) is None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--isa", default="auto", help="tile backend: auto, amx, avx512bf16 or portable")
    ap.add_argument("--peak-seconds", type=float, default=0.3)
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall: perf_counter; cpu: process CPU time summed over threads (steadier on a shared "
                         "machine, but counts OpenMP spin-waits; use with --threads 1)")  # fmt: skip
    ap.add_argument("--avx512-path", choices=("auto", "tile"), default="auto",
                    help="avx512bf16 only: auto = the direct conv where it applies, tile = the tile body")
    args = ap.parse_args(argv)
    global _CLOCK
    _CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    isa = cpu_bf16.choose_backend(args.isa).name
    peak = tile_peak_gflops(isa, args.peak_seconds) * args.threads
    print(f"tile backend {isa} (avx512 path {args.avx512_path}); peak {peak:.0f} GFLOP/s over {args.threads} threads "
          f"({peak / args.threads:.0f} per core); clock {args.clock}; torch {torch.__version__}")  # fmt: skip
    print("| layer | HxW | Cin->Cout | K | tile ms | tile GFLOP/s | % peak | oneDNN bf16 ms | tile/oneDNN "
          "| ours fp32 ms | tile/fp32 | bf16 Winograd ms | Winograd/oneDNN | rel-L2 tile | rel-L2 Winograd "
          "| rel-L2 oneDNN |")  # fmt: skip
    print("|" + " --- |" * 16)
    rows = []
    for name, hw, cin, cout, k in unet_convs(args.size):
        x = torch.randn(args.batch, hw, hw, cin).bfloat16()
        x_cl = x.permute(0, 3, 1, 2)  # NCHW view of NHWC memory = channels_last
        b = 0.1 * torch.randn(cout)
        if k == 2:  # transposed 2x2/s2: weight [Cin, Cout, 2, 2], output 2H x 2W
            w = torch.randn(cin, cout, 2, 2) * (2.0 / cin) ** 0.5
            out = torch.empty(args.batch, 2 * hw, 2 * hw, cout, dtype=torch.bfloat16)
            tile = functools.partial(cpu_bf16.conv_transpose2x2, x, cpu_bf16.pack_conv_transpose_weight(w), b,
                                     act="relu", out=out, isa=isa, path=args.avx512_path)  # fmt: skip
            onednn = functools.partial(_onednn_up_relu, x_cl, w.bfloat16(), b.bfloat16())
            out32 = torch.empty(args.batch, 2 * hw, 2 * hw, cout)
            fp32 = functools.partial(cpu.conv_transpose2x2, x.float(), cpu.pack_conv_transpose_weight(w, torch.float32),
                                     b, act="relu", out=out32)  # fmt: skip
            ref = cpu_bf16.conv_transpose2x2_reference(x, w, b, act="relu")
            flop = 2 * args.batch * hw * hw * cin * cout * 4
            wino, out_w = None, None
        else:
            w = torch.randn(cout, cin, k, k) * (2.0 / (cin * k * k)) ** 0.5
            out = torch.empty(args.batch, hw, hw, cout, dtype=torch.bfloat16)
            tile = functools.partial(cpu_bf16.conv2d, x, cpu_bf16.pack_conv_weight(w), b, padding=k // 2,
                                     act="relu", out=out, isa=isa, path=args.avx512_path)  # fmt: skip
            wb = w.bfloat16().contiguous(memory_format=torch.channels_last)
            onednn = functools.partial(_onednn_conv_relu, x_cl, wb, b.bfloat16(), k // 2)
            out32 = torch.empty(args.batch, hw, hw, cout)
            fp32 = functools.partial(cpu.conv2d, [x.float()], cpu.pack_conv_weight(w, torch.float32), b,
                                     padding=k // 2, act="relu", out=out32)  # fmt: skip
            ref = cpu_bf16.conv2d_reference(x, w, b, padding=k // 2, act="relu")
            flop = 2 * args.batch * hw * hw * cin * cout * k * k
            wino, out_w = None, None
            if not cpu_winograd.winograd_decision(w.shape):
                out_w = torch.empty_like(out)
                wino = functools.partial(cpu_winograd.conv3x3_winograd, [x],
                                         cpu_winograd.pack_winograd_weight(w, io_dtype=torch.bfloat16), b,
                                         padding=1, act="relu", out=out_w)  # fmt: skip
        with torch.inference_mode():
            t_tile, t_ref, t_f32, t_wino = [], [], [], []
            tile(), onednn(), fp32()
            if wino:
                wino()
            for _ in range(args.repeats):  # interleaved, so a busy machine slows all alike
                t_tile.append(_timed(tile))
                t_ref.append(_timed(onednn))
                t_f32.append(_timed(fp32))
                if wino:
                    t_wino.append(_timed(wino))
            y_ref = onednn().permute(0, 2, 3, 1)
        mt, mr, mf = statistics.median(t_tile), statistics.median(t_ref), statistics.median(t_f32)
        mw = statistics.median(t_wino) if wino else None
        picked = mw if wino and _engine_takes_winograd(isa) else mt
        row = dict(layer=name, hw=hw, cin=cin, cout=cout, k=k, tile_ms=mt * 1e3, tile_gflops=flop / mt / 1e9,
                   pct_peak=100 * flop / mt / 1e9 / peak, onednn_ms=mr * 1e3, ratio=mt / mr,
                   fp32_ms=mf * 1e3, ratio_fp32=mt / mf,
                   wino_ms=None if mw is None else mw * 1e3, ratio_wino=None if mw is None else mw / mr,
                   engine_ms=picked * 1e3, rel_l2_tile=rel_l2(out, ref),
                   rel_l2_wino=None if out_w is None else rel_l2(out_w, ref),
                   rel_l2_onednn=rel_l2(y_ref, ref))  # fmt: skip
        rows.append(row)
        print(f"| {name} | {hw}x{hw} | {cin}->{cout} | {k} | {row['tile_ms']:.2f} | {row['tile_gflops']:.0f} | "
              f"{row['pct_peak']:.1f} | {row['onednn_ms']:.2f} | {row['ratio']:.2f} | {row['fp32_ms']:.2f} | "
              f"{row['ratio_fp32']:.2f} | {_opt(row['wino_ms'], '.2f')} | {_opt(row['ratio_wino'], '.2f')} | "
              f"{row['rel_l2_tile']:.1e} | {_opt(row['rel_l2_wino'], '.1e')} | {row['rel_l2_onednn']:.1e} |")  # fmt: skip
        sys.stdout.flush()
    tot_t, tot_r = sum(r["tile_ms"] for r in rows), sum(r["onednn_ms"] for r in rows)
    tot_f = sum(r["fp32_ms"] for r in rows)
    tot_e = sum(r["engine_ms"] for r in rows)
    print(f"total: tile {tot_t:.1f} ms, oneDNN bf16 {tot_r:.1f} ms (ratio {tot_t / tot_r:.2f}), "
          f"ours fp32 {tot_f:.1f} ms (ratio {tot_t / tot_f:.2f})")  # fmt: skip
    print(f"the engine's choice per layer (the registry's, on {isa}): {tot_e:.1f} ms, "
          f"{tot_e / tot_r:.2f}x oneDNN bf16")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(dict(isa=isa, avx512_path=args.avx512_path, threads=args.threads, size=args.size, clock=args.clock,
                                             repeats=args.repeats, peak_gflops=peak, torch=torch.__version__,
                                             command=" ".join(["python", "benchmarks/bench_amx_bf16.py", *sys.argv[1:]]),
                                             rows=rows), indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
