"""Whole-network comparison in CPU time, for shared machines (issue 25, docs/peers.md): the bench's own
contenders (same model, input, conversion and settings as `unet-fast bench`) in one process, interleaved
rounds, medians of the CPU time of the calling thread at 1 thread (every engine runs on the calling thread
there, so other processes' time slices do not inflate it), or of the whole process (all threads) beside the
wall time at more threads.

    python benchmarks/bench_peers_cputime.py [--workload unet64-256] [--threads 1] [--repeats 5]
        [--contenders unet_fast-cpu@avx512,unet_fast-cpu@avx2,mnn,ncnn,onnxruntime,openvino]

`name@isa` prepares a unet_fast contender with UNET_FAST_KERNELS=cpu=isa (the variant is fixed at pack time), so
several kernel variants run side by side in one process; `name@key=value;key=value` prepares it with
UNET_FAST_KERNELS=key=value,key=value (e.g. `unet_fast-cpu@cpu=avx512;winograd=4`: F(4x4) only, issue 25). Parity (rel-L2 against PyTorch fp32) is printed per
contender. At 2+ threads a wall figure on a loaded machine is a direction, not a figure (see docs/peers.md)."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from unet_fast.bench.contenders import Settings, get_contender
from unet_fast.bench.machine import machine_record
from unet_fast.bench.workloads import get_workload


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="unet64-256")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--contenders", default="unet_fast-cpu@avx512,unet_fast-cpu@avx2,mnn,ncnn")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    w = get_workload(args.workload)
    model, x = w.build(), w.make_input()
    with torch.no_grad():
        ref = model(x).numpy().astype(np.float64)
    names = args.contenders.split(",")
    runs = {}
    with tempfile.TemporaryDirectory(prefix="peers-cputime-") as tmp:
        s = Settings("cpu", torch.float32, args.threads, Path(tmp))
        for name in names:
            base, _, isa = name.partition("@")
            why = get_contender(base).check(s)
            if why:
                print(f"{name}: not run: {why}")
                continue
            saved = os.environ.get("UNET_FAST_KERNELS")
            if isa:  # 'avx512' = cpu=avx512; 'cpu=avx512;winograd=4' = UNET_FAST_KERNELS=cpu=avx512,winograd=4
                os.environ["UNET_FAST_KERNELS"] = isa.replace(";", ",") if "=" in isa else f"cpu={isa}"
            try:
                p = get_contender(base).prepare(model, x, s)
            finally:
                if isa:
                    os.environ.pop("UNET_FAST_KERNELS")
                    if saved is not None:
                        os.environ["UNET_FAST_KERNELS"] = saved
            out = p.run()
            out = out.numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
            err = np.linalg.norm(out - ref) / np.linalg.norm(ref)
            print(f"{name}: rel-L2 {err:.2e}; {p.note}", flush=True)
            runs[name] = p.run
        cpu_clock = time.thread_time if args.threads == 1 else time.process_time
        samples: dict[str, list[tuple[float, float]]] = {n: [] for n in runs}
        order = list(runs)
        for r in range(args.repeats):
            for name in order if r % 2 == 0 else order[::-1]:
                c0, w0 = cpu_clock(), time.perf_counter()
                with torch.inference_mode():
                    runs[name]()
                samples[name].append(((cpu_clock() - c0) * 1e3, (time.perf_counter() - w0) * 1e3))
    m = machine_record()
    what = "CPU time of the calling thread" if args.threads == 1 else "process CPU time (all threads)"
    print(f"\n# {args.workload}, {args.threads} threads, {what} and wall, median of {args.repeats} interleaved "
          f"rounds; {m['cpu']}, commit {m['commit']}, load avg {m['load_average_1min']}")  # fmt: skip
    for name, s_ in samples.items():
        cpu = statistics.median(a for a, _ in s_)
        wall = statistics.median(b for _, b in s_)
        print(f"{name}: cpu {cpu:.1f} ms (min {min(a for a, _ in s_):.1f}), wall {wall:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
