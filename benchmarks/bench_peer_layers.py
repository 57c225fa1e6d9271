"""Per-layer comparison with the Winograd CPU peers (issue 25): every conv of `unet64-256` (or -512) run
alone by unet_fast's CPU kernels, MNN, ncnn and torch channels_last (oneDNN), same threads, interleaved
rounds, medians, with each engine's accuracy against float64 beside its speed.

    python benchmarks/bench_peer_layers.py [--workload unet64-256] [--threads 1 --clock thread]
        [--repeats 7] [--isa avx2] [--layers enc3,bottleneck] [--engines ours,mnn,ncnn,torch_cl] [--json F]

Layers: the 18 3x3 convs (conv + bias + ReLU; BN is folded by every engine, so a layer is conv+bias+ReLU)
and the 4 transposed 2x2 convs of the decoder. The decoder's first conv reads [skip, upsampled]: ours as a
virtual concat of two NHWC views (as the engine runs it), the peers as one concatenated tensor (as their
graphs run it after their concat op, which is not timed here). unet_fast: unet_fast.kernels.cpu.conv2d /
conv_transpose2x2 on NHWC, the engine's per-layer kernels (Winograd where winograd_decision picks it, F(6x6)
or F(4x4) by the engine's size rule cpu_winograd.f6_decision, else the direct path); `ours4` the same with
F(4x4) wherever Winograd runs. MNN: the layer exported to ONNX, converted in-process by `_tools.mnnconvert`
(never the `mnnconvert` console script: unet_fast/bench/peers_mnn.py), Session API, precision=high.
ncnn: the same ONNX through pnnx (fp16=0), Winograd + sgemm on, fp16/bf16/int8 off (peers_ncnn.py).
Every engine is timed on its own native layout (ours NHWC, MNN NC4HW4 inside a session whose input copy
is outside the timed call, ncnn packed), the conv alone.

Clock: `--clock thread` (with --threads 1) times the CPU time of the calling thread, which other processes'
time slices do not inflate: MNN and ncnn at 1 thread run on the calling thread (checked: their wall and
thread times agree on an idle core). Effective GFLOP/s = direct-conv FLOPs / time; "x peak" against
`--peak` GFLOP/s (default: measured by benchmarks/kernels/gemm_tile_peak.cpp when it builds, else torch's
sgemm)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_winograd import rel_l2, sgemm_peak, unet_layers

from unet_fast.bench.machine import machine_record
from unet_fast.kernels import cpu, spec
from unet_fast.kernels.cpu_winograd import f6_decision, pack_winograd_weight

# ours: the engine's per-layer kernel (Winograd F(6x6) or F(4x4) by cpu_winograd.f6_decision on the output size,
# else direct); ours4: F(4x4) wherever Winograd runs (UNET_FAST_KERNELS=winograd=4), for the F(6x6) gain
ENGINES = ("ours", "ours4", "mnn", "ncnn", "torch_cl")
OURS = ("ours", "ours4")


def transposed_layers(size: int, base: int = 64, depth: int = 4) -> list[tuple[str, int, int, int]]:
    """(name, input H=W, Cin, Cout) of the decoder's transposed 2x2 stride-2 convs."""
    return [(f"up{lvl}", size >> (lvl + 1), base << (lvl + 1), base << lvl) for lvl in reversed(range(depth))]


def _onnx(module: nn.Module, x: torch.Tensor, path: Path) -> Path:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                          output_names=["output"])  # fmt: skip
    return path


def mnn_runner(onnx_path: Path, x: np.ndarray, threads: int):
    """(run, output) for the layer in MNN: run() times the session only; output() reads the result."""
    import MNN

    from unet_fast.bench.peers_mnn import convert

    mnn_path = convert(onnx_path, onnx_path.with_suffix(".mnn"))
    interp = MNN.Interpreter(str(mnn_path))
    sess = interp.createSession({"backend": "CPU", "precision": "high", "numThread": threads})
    inp = interp.getSessionInput(sess)
    inp.copyFrom(MNN.Tensor(x.shape, MNN.Halide_Type_Float, x, MNN.Tensor_DimensionType_Caffe))
    out = interp.getSessionOutput(sess)
    shape = tuple(out.getShape())
    host = MNN.Tensor(shape, MNN.Halide_Type_Float, np.zeros(shape, np.float32), MNN.Tensor_DimensionType_Caffe)

    def run() -> None:
        interp.runSession(sess)

    def output() -> torch.Tensor:
        out.copyToHostTensor(host)
        return torch.from_numpy(np.array(host.getNumpyData(), copy=True))

    return run, output


def ncnn_runner(onnx_path: Path, x: np.ndarray, threads: int):
    import ncnn

    from unet_fast.bench import peers_ncnn

    d = onnx_path.parent / onnx_path.stem
    d.mkdir(exist_ok=True)
    param, binary = peers_ncnn.convert(onnx_path, x.shape, d)
    net = ncnn.Net()
    net.opt = peers_ncnn.options(threads)
    net.load_param(str(param))
    net.load_model(str(binary))
    name_in, name_out = peers_ncnn.io_names(param)
    mat = ncnn.Mat(np.ascontiguousarray(x[0]))
    res: list = [None]

    def run() -> None:
        with net.create_extractor() as ex:
            ex.input(name_in, mat)
            res[0] = ex.extract(name_out)[1]

    def output() -> torch.Tensor:
        return torch.from_numpy(np.array(res[0]))[None].clone()

    return run, output, (x, mat)


def bench_layer(kind: str, hw: int, cins: list[int], cout: int, args, tmp: Path, clock) -> dict:
    g = torch.Generator().manual_seed(hw * 1000 + cout)
    cin = sum(cins)
    if kind == "conv3x3":
        w = torch.randn(cout, cin, 3, 3, generator=g) * (2.0 / (9 * cin)) ** 0.5
        module: nn.Module = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU())
        flops = 2 * hw * hw * cin * cout * 9
        out_hw = hw
    else:
        w = torch.randn(cin, cout, 2, 2, generator=g) * (2.0 / (4 * cin)) ** 0.5
        module = nn.Sequential(nn.ConvTranspose2d(cin, cout, 2, stride=2))
        flops = 2 * hw * hw * cin * cout * 4
        out_hw = 2 * hw
    b = 0.1 * torch.randn(cout, generator=g)
    with torch.no_grad():
        module[0].weight.copy_(w)
        module[0].bias.copy_(b)
    module.eval()
    # post-ReLU activations (a real U-Net's), except the stem's image input
    xs = [torch.randn(1, hw, hw, c, generator=g) for c in cins]
    if cin > 3:
        xs = [x.relu() for x in xs]
    x_nchw = torch.cat(xs, 3).permute(0, 3, 1, 2).contiguous()
    if kind == "conv3x3":
        ref = spec.conv2d([x.double() for x in xs], w.double(), b.double(), padding=1, act="relu")
    else:
        ref = F.conv_transpose2d(x_nchw.double(), w.double(), b.double(), stride=2).permute(0, 2, 3, 1)
    runs, outs, keep = {}, {}, []
    algo: dict[str, str] = {}
    for eng in (e for e in OURS if e in args.engines):
        out = torch.empty(1, out_hw, out_hw, cout)
        if kind == "conv3x3":
            packed = cpu.pack_conv_weight(w, torch.float32, isa=args.isa)  # F(4x4) where Winograd runs
            if eng == "ours" and packed.winograd is not None and not f6_decision((out_hw, out_hw)):
                packed = cpu.ConvWeight(packed.oihw, packed.isa, pack_winograd_weight(w, isa=packed.isa, tile=6))
            runs[eng] = lambda p=packed, o=out: cpu.conv2d(xs, p, b, padding=1, act="relu", out=o)
            algo[eng] = packed.algorithm or "direct"
        else:
            packed_t = cpu.pack_conv_transpose_weight(w, torch.float32, isa=args.isa)
            runs[eng] = lambda p=packed_t, o=out: cpu.conv_transpose2x2(xs[0], p, b, out=o)
            algo[eng] = "GEMM tiles"
        outs[eng] = lambda o=out: o
    onnx_path = None
    if "mnn" in args.engines or "ncnn" in args.engines:
        onnx_path = _onnx(module, x_nchw, tmp / f"{kind}-{hw}-{cin}-{cout}.onnx")
    xn = x_nchw.numpy()
    if "mnn" in args.engines:
        runs["mnn"], outs["mnn"] = mnn_runner(onnx_path, xn, args.threads)
    if "ncnn" in args.engines:
        runs["ncnn"], outs["ncnn"], k = ncnn_runner(onnx_path, xn, args.threads)
        keep.append(k)
    if "torch_cl" in args.engines:
        x_cl = x_nchw.contiguous(memory_format=torch.channels_last)
        m_cl = module.to(memory_format=torch.channels_last)
        res_t: list = [None]

        def run_t() -> None:
            with torch.inference_mode():
                res_t[0] = m_cl(x_cl)

        runs["torch_cl"], outs["torch_cl"] = run_t, lambda: res_t[0].permute(0, 2, 3, 1)
    for k in runs:
        runs[k]()  # warm up (and create the output)
    errs = {}
    for k, get in outs.items():
        got = get()
        got = got.permute(0, 2, 3, 1) if k in ("mnn", "ncnn") else got
        errs[k] = rel_l2(got, ref)
    samples: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(args.repeats):
        for k in list(runs) if r % 2 == 0 else list(reversed(runs)):
            t0 = clock()
            runs[k]()
            samples[k].append((clock() - t0) * 1e3)
    row = {"kind": kind, "hw": hw, "cin": cins, "cout": cout, "gflop": flops / 1e9}
    for k, s in samples.items():
        med = statistics.median(s)
        row[k] = {"median_ms": med, "min_ms": min(s), "max_ms": max(s), "gflops": flops / med / 1e6,
                  "rel_l2": errs[k]}  # fmt: skip
    for eng, a in algo.items():
        row[eng]["algorithm"] = a
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", choices=("unet64-256", "unet64-512"), default="unet64-256")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=("wall", "thread"), default="thread")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--isa", default=None, help="our CPU kernel variant (default: UNET_FAST_CPU_ISA or best)")
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--layers", default="", help="comma-separated substrings of layer names to run")
    ap.add_argument("--peak", type=float, default=0.0, help="FMA peak GFLOP/s of the threads used (default: sgemm)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    args.engines = [e for e in args.engines.split(",") if e]
    bad = [e for e in args.engines if e not in ENGINES]
    if bad:
        ap.error(f"unknown engines {bad}; choose from {ENGINES}")
    for e, mod in (("mnn", "MNN"), ("ncnn", "ncnn")):
        if e in args.engines and importlib.util.find_spec(mod) is None:
            print(f"{e}: not installed (pip install -e '.[peers]'): left out", file=sys.stderr)
            args.engines.remove(e)
    if args.clock == "thread" and args.threads != 1:
        ap.error("--clock thread measures the calling thread only: use it with --threads 1")
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    torch.set_num_threads(args.threads)
    size = int(args.workload.split("-")[1])
    layers = [("conv3x3", n, hw, cins, cout) for n, hw, cins, cout in unet_layers(size)]
    layers += [("convT2x2", n, hw, [cin], cout) for n, hw, cin, cout in transposed_layers(size)]
    layers = [lay for lay in layers if not args.layers or any(s in lay[1] for s in args.layers.split(","))]
    machine = machine_record()
    peak = args.peak or sgemm_peak(2048, 3, clock)
    print(f"# {machine['cpu']}, {args.threads} threads, {args.clock} clock, load avg {machine['load_average_1min']}, "
          f"isa {args.isa or 'auto'}, peak {peak:.0f} GFLOP/s ({'given' if args.peak else 'torch sgemm 2048'})")  # fmt: skip
    eng = [e for e in ENGINES if e in args.engines]
    print("| layer | HxW | Cin -> Cout | " + " | ".join(f"{e} ms" for e in eng) + " | ours / best peer | "
          + " | ".join(f"{e} x peak" for e in eng) + " | " + " | ".join(f"{e} rel-L2" for e in eng) + " |")  # fmt: skip
    print("|" + "---|" * (4 + 3 * len(eng)))
    rows = []
    with tempfile.TemporaryDirectory(prefix="peer-layers-") as tmp:
        for kind, name, hw, cins, cout in layers:
            row = bench_layer(kind, hw, cins, cout, args, Path(tmp), clock) | {"layer": name}
            rows.append(row)
            peers = [row[e]["median_ms"] for e in eng if e not in OURS]
            ratio = f"{row['ours']['median_ms'] / min(peers):.2f}" if "ours" in row and peers else "-"
            print(f"| {name} | {hw} | {'+'.join(map(str, cins))} -> {cout} | "
                  + " | ".join(f"{row[e]['median_ms']:.2f}" for e in eng) + f" | {ratio} | "
                  + " | ".join(f"{row[e]['gflops'] / peak:.2f}" for e in eng) + " | "
                  + " | ".join(f"{row[e]['rel_l2']:.1e}" for e in eng) + " |", flush=True)  # fmt: skip
    totals = {e: sum(r[e]["median_ms"] for r in rows) for e in eng}
    print("\ntotals (ms): " + ", ".join(f"{e} {t:.1f}" for e, t in totals.items()))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "peak_gflops": peak, "threads": args.threads,
                                         "clock": args.clock, "isa": args.isa, "rows": rows, "totals": totals},
                                        indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
