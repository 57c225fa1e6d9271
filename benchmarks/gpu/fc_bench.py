"""The benchmark worker of first_contact.py: runs benchmark jobs in a process of its own and writes one JSON
line per row as soon as the row is measured.

A job is one (workload, batch, dtype[, size]) and a list of variants: a contender of unet_fast/bench
(`eager-cl`, `compile`) or a unet_fast backend (`unet_fast-triton`, `unet_fast-cuda`, `unet_fast-torch`,
`unet_fast-cpu`), each optionally `+graphs` (CUDA graphs: the peers' call captured by bench.timing.cuda_graph,
unet_fast's own `optimize(cuda_graphs=True)`). Every row: parity of one warm output against the fp32 PyTorch
reference of the same input (runner.check_parity, limits of runner.PARITY_LIMITS), then `repeats` timed calls
(CUDA events on a GPU, bench.timing) whose median, min and max go into runner.make_row's row, plus the
achieved TFLOP/s and the fraction of the device's dense peak and of the roofline floor (bench/roofline.py).

Why a separate process: a kernel fault (illegal address) poisons the CUDA context for every later call. On
such an error the worker writes a `fatal` line and exits with code 3; first_contact.py starts a new worker
for the rows that are left. torch.compile rows run in a worker of their own, so first_contact.py can cap
their compile time by killing it.

    python fc_bench.py --jobs JOBS.json --out ROWS.jsonl --deadline EPOCH_SECONDS
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from unet_fast.bench.contenders import CONTENDERS, DTYPE_NAMES, Prepared, Settings  # noqa: E402
from unet_fast.bench.reference import REFERENCE_LABEL, reference_output  # noqa: E402
from unet_fast.bench.roofline import Device, roofline  # noqa: E402
from unet_fast.bench.runner import check_parity, make_row  # noqa: E402
from unet_fast.bench.timing import cuda_graph, timer_for  # noqa: E402
from unet_fast.bench.workloads import get_workload  # noqa: E402

DTYPES = {v: k for k, v in DTYPE_NAMES.items()}
GRAPHS = "+graphs"
FATAL_EXIT = 3
# The H200 (SXM) spec sheet: dense fp16/bf16 tensor-core rate and HBM3e bandwidth. A model, labelled so; the
# machine stage of first_contact.py also measures a bf16 matmul and a device copy on the machine itself.
H200_SPEC = {"name": "H200 (spec sheet)", "flops": {"float16": 989e12, "bfloat16": 989e12, "float32": 67e12},
             "bandwidth": 4.8e12}  # fmt: skip
CUDA_FAULTS = ("illegal memory access", "unspecified launch failure", "misaligned address", "CUDA error",
               "device-side assert", "an illegal instruction")  # fmt: skip


def split_variant(variant: str) -> tuple[str, bool]:
    """'unet_fast-triton+graphs' -> ('unet_fast-triton', True)."""
    return (variant[: -len(GRAPHS)], True) if variant.endswith(GRAPHS) else (variant, False)


def emit(out, record: dict) -> None:
    out.write(json.dumps(record, default=str) + "\n")
    out.flush()
    row = record.get("row") or {}
    detail = f"{row['median_ms']:.3f} ms, parity {'ok' if row['parity_ok'] else 'FAIL'}" if row else (
        record.get("reason") or record.get("error") or "")  # fmt: skip
    print(f"[{time.strftime('%H:%M:%S')}] {record['type']} {record.get('key')} {record.get('variant', '')}: "
          f"{str(detail)[:300]}", flush=True)  # fmt: skip


def reference(model: torch.nn.Module, x: torch.Tensor, device: str) -> tuple[torch.Tensor, str]:
    """The fp32 PyTorch eager output (on CPU tensors) and how it was computed. On a GPU it runs there in
    fp32 with TF32 off (the CPU would take tens of seconds per batch-16 512x512 forward)."""
    if device == "cpu":
        return reference_output(model, x), REFERENCE_LABEL
    m = copy.deepcopy(model).to(device=device, dtype=torch.float32).eval()
    with torch.inference_mode():
        out = m(x.to(device=device, dtype=torch.float32)).float().cpu()
    del m
    return out, f"pytorch eager, fp32, NCHW, on {device} (cuDNN, TF32 off)"


def prepare_unet_fast(backend: str, graphs: bool, model: torch.nn.Module, x: torch.Tensor,
                      s: Settings) -> Prepared:  # fmt: skip
    """unet_fast.optimize(backend, dtype, cuda_graphs=graphs) on the input in the run's dtype."""
    import unet_fast

    t0 = time.perf_counter()
    xs = x.to(device=s.device, dtype=s.dtype)
    fast = unet_fast.optimize(copy.deepcopy(model).float().eval(), xs, backend=backend, dtype=s.dtype,
                              cuda_graphs=graphs)  # fmt: skip

    def run() -> torch.Tensor:
        return fast(xs)

    with torch.inference_mode():
        run()
    if s.device == "cuda":
        torch.cuda.synchronize()
    report = str(fast.report())
    notes = ["engine CUDA graphs" if graphs else "no CUDA graphs"]
    if any(step.fallback for step in fast.report_data().steps):  # the reference or PyTorch runs a step
        notes.append("some steps fall back to PyTorch (see the report in the JSON)")
    return Prepared(run, time.perf_counter() - t0, "; ".join(notes), report=report)


def prepare_variant(variant: str, model: torch.nn.Module, x: torch.Tensor, s: Settings,
                    cache: dict[str, Prepared]) -> Prepared:  # fmt: skip
    base, graphs = split_variant(variant)
    if graphs and s.device != "cuda":
        raise _Skip("CUDA graphs need a CUDA device")
    if base.startswith("unet_fast-"):
        return prepare_unet_fast(base.removeprefix("unet_fast-"), graphs, model, x, s)
    contender = CONTENDERS[base]
    why = contender.check(s)
    if why:
        raise _Skip(why)
    if base not in cache:  # the plain and the graph variant share one prepared (compiled) call
        cache[base] = contender.prepare(model, x, s)
    p = cache[base]
    if not graphs:
        return p
    t0 = time.perf_counter()
    run = cuda_graph(p.run)  # RuntimeError when the call cannot be captured: the row fails, saying so
    return Prepared(run, p.setup_s + time.perf_counter() - t0, "; ".join(filter(None, [p.note, "CUDA graph replay"])),
                    graphable=True, report=p.report, precision=p.precision)  # fmt: skip


class _Skip(Exception):
    """A variant that cannot run here (a reason, not a failure)."""


def cuda_alive(device: str) -> bool:
    if device != "cuda":
        return True
    try:
        torch.zeros(1, device="cuda").add_(1).item()
        torch.cuda.synchronize()
        return True
    except Exception:
        return False


def roofline_fields(model: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype, peak: dict) -> dict:
    """Model FLOPs (roofline.py's count of the eager graph) and the fused plan's floor on the peak device."""
    key = DTYPE_NAMES[dtype]
    dev = Device(peak["name"], peak["flops"][key], peak["bandwidth"], "model, spec sheet",
                 f"{key} dense {peak['flops'][key] / 1e12:g} TFLOP/s, {peak['bandwidth'] / 1e12:g} TB/s")  # fmt: skip
    s = roofline(model, x, dtype, [dev], "bench", use_plan=False).summary()
    d = s["devices"][0]
    return {"model_gflop": s["unfused_flops"] / 1e9, "peak_tflops": dev.peak_flops / 1e12,
            "peak_source": f"{dev.name}: {dev.detail}", "roofline_floor_ms": d["fused_floor_ms"]}  # fmt: skip


def add_efficiency(row: dict, rf: dict, measured_tflops: float | None) -> None:
    """The row's achieved TFLOP/s and its fractions of the dense peak, of the roofline floor and of the
    bf16 matmul rate measured on this machine (when the machine stage measured one)."""
    row.update(rf)
    med_s = row["median_ms"] / 1e3
    if not (med_s > 0 and math.isfinite(med_s)):
        return
    tflops = rf["model_gflop"] / 1e3 / med_s
    row["achieved_tflops"] = tflops
    row["fraction_of_peak"] = tflops / rf["peak_tflops"]
    row["fraction_of_roofline_floor"] = rf["roofline_floor_ms"] / row["median_ms"]
    if measured_tflops:
        row["fraction_of_measured_matmul"] = tflops / measured_tflops


def run_job(job: dict, spec: dict, out, deadline: float) -> None:
    device, repeats, warmup = spec["device"], spec["repeats"], spec["warmup"]
    dtype = DTYPES[job["dtype"]]
    w = get_workload(job["workload"])
    x = w.make_input(job["batch"], 0, tuple(job["size"]) if job.get("size") else None)
    model = w.build()
    t0 = time.perf_counter()
    ref, ref_label = reference(model, x, device)
    rf = roofline_fields(model, x, dtype, spec.get("peak", H200_SPEC))
    emit(out, {"type": "job", "key": job["key"], "input_shape": list(x.shape), "reference": ref_label,
               "reference_s": time.perf_counter() - t0, **rf})  # fmt: skip
    settings = Settings(
        device, dtype, torch.get_num_threads(), Path(spec["workdir"]) / job["key"].replace("/", "_")
    )
    cache: dict[str, Prepared] = {}
    eager_ms: float | None = None
    timer = timer_for(device)
    for variant in job["variants"]:
        base = {"type": "row", "key": job["key"], "variant": variant}
        left = deadline - time.time()
        if left < spec["min_row_s"]:
            emit(
                out,
                {
                    **base,
                    "type": "skip",
                    "reason": f"deadline: {left:.0f} s left, a row needs ~{spec['min_row_s']} s",
                },
            )
            continue
        try:
            with (
                torch.inference_mode()
            ):  # graphs are captured, and the engine packs its weights, for inference
                p = prepare_variant(variant, model, x, settings, cache)
            parity = check_parity(p, ref, warmup)
            with torch.inference_mode():
                samples = [timer(p.run) for _ in range(repeats)]
        except _Skip as e:
            emit(out, {**base, "type": "skip", "reason": str(e)})
            continue
        except Exception as e:
            text = f"{type(e).__name__}: {e}"
            emit(
                out,
                {**base, "type": "fail", "error": text[:2000], "traceback": traceback.format_exc()[-4000:]},
            )
            if any(f in text for f in CUDA_FAULTS) and not cuda_alive(device):
                emit(out, {**base, "type": "fatal", "error": "the CUDA context is unusable after this error"})
                sys.exit(FATAL_EXIT)
            continue
        row = make_row(w.name, tuple(x.shape), dtype, device, variant, settings.threads, samples, warmup, p,
                       parity, eager_ms)  # fmt: skip
        row.update(variant=variant, contender_base=split_variant(variant)[0], cuda_graphs=split_variant(variant)[1],
                   job=job["key"], reference=ref_label)  # fmt: skip
        add_efficiency(row, rf, spec.get("measured_matmul_tflops"))
        if variant == "eager-cl":
            eager_ms = row["median_ms"]
        emit(out, {**base, "row": row})
    cache.clear()
    if device == "cuda":
        torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--jobs", type=Path, required=True, help="JSON: {device, repeats, warmup, min_row_s, jobs: [...]}"
    )
    p.add_argument("--out", type=Path, required=True, help="JSON lines, appended")
    p.add_argument("--deadline", type=float, required=True, help="epoch seconds: no row starts after it")
    a = p.parse_args(argv)
    spec = json.loads(a.jobs.read_text())
    if spec["device"] == "cuda":
        # the reference and every fp32 peer compute in fp32, not TF32 (PyTorch enables TF32 for cuDNN convs)
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    with a.out.open("a", encoding="utf-8") as out:
        for job in spec["jobs"]:
            try:
                run_job(job, spec, out, a.deadline)
            except SystemExit:
                raise
            except Exception as e:  # the job's setup (model, reference) failed: its rows fail, the rest go on
                for v in job["variants"]:
                    emit(out, {"type": "fail", "key": job["key"], "variant": v,
                               "error": f"job setup: {type(e).__name__}: {e}"[:2000]})  # fmt: skip
                if not cuda_alive(spec["device"]):
                    return FATAL_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
