"""Whole-slide segmentation: peak memory and throughput against slide size, and exact tiles against blended
windows (ours and MONAI's `sliding_window_inference`) on an image that fits in memory, on the bundled demo model
(base 16, depth 3) through the engine.

    python benchmarks/bench_wsi.py --machine-name amd-epyc-zen4-2c [--note "..."] [--sizes 2048 20480 61440]
        [--tissue 0.01] [--threads 2] [--fit-size 2048] [--repeats 3] [--skip-slides] [--skip-fit]

Slides: synthetic tiled pyramidal BigTIFFs (`unet_fast.demo.synthetic_slide`, 256-px deflate tiles, flat
background with `--tissue` of the tiles holding objects), each segmented in a fresh subprocess by
`segment_slide` (exact tiles, 512-px cores, batch 2): peak RSS of that process (its VmHWM: imports, model,
engine and the run; not ru_maxrss, which on Linux carries the parent's high-water mark across exec, so it showed
the slide generator's 2.4 GiB), wall time, output Mpx/s. The smallest slide also runs without background skipping (every
tile through the model); the others skip background tiles (threshold 0.1), so their Mpx/s is mostly the
tissue test's and the computed tiles' rate is given apart.

Fits in memory (`--fit-size` square, the same synthetic content): the engine on the whole image (one call);
exact tiles (`exact_tiled_inference`, 512-px cores); our blended window (128-px patches, overlap 0.5,
Gaussian, batch 4); MONAI's `sliding_window_inference` with the same predictor, patch, overlap, Gaussian
blending and batch (when `monai` is importable). Medians of `--repeats`; agreement with the whole-image call.

Writes benchmarks/results/<machine>-<date>-wsi.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch

from unet_fast.bench.machine import library_version, machine_record
from unet_fast.bench.results import write_side_results
from unet_fast.demo import bundled
from unet_fast.demo.synthetic_slide import synthetic_slide

_RUN = """
import json, resource, sys, time, torch
torch.set_num_threads({threads})
from unet_fast.inference.wsi import SlideModel, SlideSettings, segment_slide

def hwm_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

t0 = time.perf_counter()
model = SlideModel.from_files({weights!r})
built = time.perf_counter() - t0
before = hwm_mib()
with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM): the run's own peak from here
    f.write("5")
s = SlideSettings(mode="exact", core=512, batch_size=2, tissue_threshold={tissue_threshold})
rep = segment_slide({slide!r}, model, {out!r}, settings=s, progress=False)
run_peak = hwm_mib()
# The process's own peak is the larger of the two VmHWM phases. ru_maxrss is kept apart: Linux folds the
# pre-exec address space's high-water mark (the parent that spawned us) into it.
print(json.dumps({{"peak_rss_mib": max(before, run_peak), "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "build_peak_rss_mib": before, "run_peak_rss_mib": run_peak, "model_s": built,
                  "run_s": rep.seconds, "mpx_per_s": rep.mpx_per_s, "cores": rep.cores, "computed": rep.computed,
                  "skipped": rep.skipped, "strategy": rep.strategy, "levels": len(rep.levels)}}))
"""


def _slide_rows(sizes: list[int], tissue: float, threads: int, tmp: Path) -> list[dict]:
    rows = []
    for i, size in enumerate(sizes):
        path = tmp / f"slide{size}.tif"
        start = time.perf_counter()
        synthetic_slide(path, size, size, tissue=tissue, seed=1)
        made = time.perf_counter() - start
        for skip in [None, 0.1] if i == 0 else [0.1]:
            out = tmp / f"out{size}-{skip}"
            code = textwrap.dedent(_RUN).format(threads=threads, weights=str(bundled.DEMO_WEIGHTS), slide=str(path),
                                                out=str(out), tissue_threshold=skip)  # fmt: skip
            res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            computed_mpx = r["computed"] * 512 * 512 / 1e6
            rows.append({"bench": "slide", "size": size, "slide_mb": path.stat().st_size / 1e6, "tissue": tissue,
                         "generate_s": made, "background_skipping": skip is not None, **r,
                         "computed_mpx": computed_mpx})  # fmt: skip
            print(rows[-1], file=sys.stderr, flush=True)
            for f in out.glob("*"):
                f.unlink() if f.is_file() else None
        path.unlink()
    return rows


def _median_s(fn, repeats: int) -> float:
    fn()  # warm-up: plans and arenas for the shapes
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


@torch.no_grad()
def _fit_rows(size: int, repeats: int, tmp: Path) -> list[dict]:
    import unet_fast
    from unet_fast.inference.halo import TilingAnalysis
    from unet_fast.inference.model_card import load_model
    from unet_fast.inference.slide_io import open_slide
    from unet_fast.inference.sliding_window import sliding_window_inference
    from unet_fast.inference.tiled_inference import compare_outputs, exact_tiled_inference
    from unet_fast.inference.wsi import SlideModel

    path = synthetic_slide(tmp / "fit.tif", size, size, tissue=0.5, seed=2)
    slide = open_slide(path)
    model, card = load_model(bundled.DEMO_WEIGHTS)
    sm = SlideModel(None, 1, card.num_classes, card.mean, card.std, card.class_names)  # for prepare() only
    x = sm.prepare(slide.read(0, 0, size, size), "fit")[None]
    fused = unet_fast.optimize(model, torch.randn(4, 1, 128, 128))
    geo = TilingAnalysis.from_fused(fused).geometry(size, size, 512)
    whole = fused(x)
    runs = {
        "engine, whole image (1 call)": lambda: fused(x),
        f"exact tiles (512 cores, {geo.grid.crop_shape[0]} crops, batch 2)": lambda: exact_tiled_inference(
            x, fused, geo, batch_size=2),
        "ours: blended windows 128, overlap 0.5, batch 4": lambda: sliding_window_inference(
            x, fused, 128, overlap=0.5, batch_size=4),
    }  # fmt: skip
    try:
        from monai.inferers import sliding_window_inference as monai_swi

        runs["MONAI sliding_window_inference 128, overlap 0.5, gaussian, batch 4"] = lambda: monai_swi(
            x, (128, 128), 4, fused, overlap=0.5, mode="gaussian")  # fmt: skip
    except ImportError as e:
        print(f"MONAI not importable ({e}): its row is left out", file=sys.stderr)
    rows = []
    for name, fn in runs.items():
        seconds = _median_s(fn, repeats)
        cmp = compare_outputs(fn().float(), whole.float())
        rows.append({"bench": "fit", "size": size, "path": name, "median_s": seconds,
                     "mpx_per_s": size * size / 1e6 / seconds, "class_agreement_vs_whole": cmp.class_agreement,
                     "rel_l2_vs_whole": cmp.rel_l2})  # fmt: skip
        print(rows[-1], file=sys.stderr, flush=True)
    slide.close()
    return rows


def _markdown(doc: dict) -> str:
    m = doc["machine"]
    lines = [f"# Whole-slide segmentation: {doc['machine_name']}", "",
             f"{m['cpu']}, {m['cores']} cores; torch {m['torch']}, tifffile {doc['tifffile']}, monai "
             f"{doc['monai'] or 'not installed'}; commit {m['commit']}{' (dirty tree)' if m.get('dirty') else ''}; "
             f"{m['date_utc']}; {doc['threads']} torch threads.", "", f"**Machine state:** {doc['note']}", "",
             f"Command: `{doc['command']}`", ""]  # fmt: skip
    slides = [r for r in doc["rows"] if r["bench"] == "slide"]
    if slides:
        lines += ["## Slides: peak memory and throughput against size (demo model, exact tiles, 512-px cores)", "",
                  "| slide | file MB | background skipped | tiles computed / total | peak RSS MiB (run / process) "
                  "| run s | output Mpx/s | computed Mpx |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for r in slides:
            lines.append(f"| {r['size']} x {r['size']} | {r['slide_mb']:.1f} | {'yes' if r['background_skipping'] else 'no'} "
                         f"| {r['computed']} / {r['cores']} | {r.get('run_peak_rss_mib', float('nan')):.0f} / {r['peak_rss_mib']:.0f} "
                         f"| {r['run_s']:.1f} | "
                         f"{r['mpx_per_s']:.2f} | {r['computed_mpx']:.1f} |")  # fmt: skip
        lines += ["", "Peak RSS: `run` is the peak while segmenting (VmHWM reset after the model and engine are "
                  "built), `process` the whole process's (the larger VmHWM of the build and run phases; not ru_maxrss, which Linux carries over from the parent at exec). Output Mpx/s counts "
                  "skipped background tiles; the computed tiles' share is the `computed Mpx` column.", ""]  # fmt: skip
    fit = [r for r in doc["rows"] if r["bench"] == "fit"]
    if fit:
        lines += [f"## An image that fits ({fit[0]['size']} x {fit[0]['size']}): exact tiles vs blended windows", "",
                  "| path | median s | Mpx/s | class map = whole image | rel-L2 vs whole |", "| --- | --- | --- | --- | --- |"]  # fmt: skip
        for r in fit:
            lines.append(f"| {r['path']} | {r['median_s']:.2f} | {r['mpx_per_s']:.2f} | "
                         f"{100 * r['class_agreement_vs_whole']:.4f}% | {r['rel_l2_vs_whole']:.1e} |")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--machine-name", required=True)
    p.add_argument("--note", default="", help="what else ran on the machine")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--sizes", type=int, nargs="+", default=[2048, 20480, 61440])
    p.add_argument("--tissue", type=float, default=0.01, help="fraction of slide tiles with objects")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--fit-size", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-slides", action="store_true")
    p.add_argument("--skip-fit", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    machine = machine_record()
    note = (
        f"{args.note + '; ' if args.note else ''}1-min load average {machine['load_average_1min']} at start"
    )
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-wsi-") as tmp:
        if not args.skip_fit:
            rows += _fit_rows(args.fit_size, args.repeats, Path(tmp))
        if not args.skip_slides:
            rows += _slide_rows(sorted(args.sizes), args.tissue, args.threads, Path(tmp))
    doc = {"machine_name": args.machine_name, "machine": machine, "note": note, "threads": args.threads,
           "tifffile": library_version("tifffile"), "monai": library_version("monai"),
           "command": "python benchmarks/bench_wsi.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "rows": rows}  # fmt: skip
    write_side_results(doc, _markdown(doc), args.out, args.machine_name, "wsi")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
