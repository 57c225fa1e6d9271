"""Throughput of `segment --ray` (Ray Data) against the single-process `segment`, latency / throughput of
`unet-fast serve` (Ray Serve) under a fixed concurrent load, on the bundled demo model, and what starting the
workers costs: the engine built once on the driver and loaded by each actor / replica (issue 26) against
each actor building its own.

    python benchmarks/bench_distributed.py --machine-name amd-epyc-zen4-2c [--note "..."] [--images 48]
        [--requests 160] [--concurrency 8] [--repeats 2] [--skip-batch] [--skip-serve] [--skip-startup]
        [--startup-model demo|unet64] [--startup-images 8]

Batch: `--images` copies of the demo image (320 x 384, 20 patches of 128 each) segmented with masks and
overlays, by (a) the single-process `unet-fast segment` path in this process with torch threads = all cores and = 1,
(b) `segment_dataset` with 1 worker holding all cores, (c) with one 1-CPU worker per core. Wall time of
the whole job from the call to the manifest, including building each worker's engine (that is what a
user waits for); the local Ray cluster is started once before (its start-up time is recorded apart, a
real cluster is already up). Configurations alternate within each repeat; the best repeat is reported.

Serve: one deployment at a time on 127.0.0.1, `--concurrency` client threads in this process sending
`--requests` PNG tiles of 128 x 128 (one patch each: the case batching is for) back to back; latency per
request (client side, HTTP included), p50/p99, and requests/s over the whole load. The clients, the HTTP
proxy and the replicas share the machine's cores: on a small machine the load generator competes.

Start-up: `segment_dataset` with one 1-CPU actor per core, with share_engine=True (the driver builds the
engine once, every actor loads its file) and False (every actor builds its own), alternating; each actor's
start-up time from the manifest (worker_startup_s). Serve: each deployment's build_app time (the engine, once)
and every replica's start-up and engine origin from /health.

Writes benchmarks/results/<machine>-<date>-distributed.json and .md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from unet_fast.bench.machine import library_version, machine_record
from unet_fast.bench.results import write_side_results
from unet_fast.cli import main as cli_main
from unet_fast.demo import bundled


def _batch_rows(images: int, repeats: int, cores: int) -> list[dict]:
    import ray

    from unet_fast.distributed import segment_dataset

    tmp = Path(tempfile.mkdtemp(prefix="bench-distributed-"))
    try:
        folder = _demo_images(tmp / "images", images)
        start = time.perf_counter()
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - start
        configs = [
            ("single-process", None, cores),
            ("single-process", None, 1),
            ("ray", 1, cores),
            ("ray", cores, 1),
        ]
        configs = list(dict.fromkeys(configs))  # one core: the 1-thread rows are the same runs
        walls: dict[int, list[float]] = {i: [] for i in range(len(configs))}
        worker_seconds: dict[int, list[float]] = {i: [] for i in range(len(configs))}
        for _ in range(repeats):
            for i, (path, workers, cpus) in enumerate(configs):
                out = tmp / f"out{i}"
                shutil.rmtree(out, ignore_errors=True)
                start = time.perf_counter()
                if path == "single-process":
                    code = cli_main(
                        ["segment", str(folder), "--out", str(out), "--quiet", "--threads", str(cpus)]
                    )
                    assert code == 0, code
                else:
                    report = segment_dataset([folder], bundled.DEMO_WEIGHTS, out, workers=workers,
                                             cpus_per_worker=cpus, overlay=True, progress=False)  # fmt: skip
                    assert report.failed == 0, report.failures
                    import pyarrow.parquet as pq

                    worker_seconds[i].append(
                        statistics.mean(pq.read_table(report.manifest)["seconds"].to_pylist())
                    )
                walls[i].append(time.perf_counter() - start)
        rows = []
        for i, (path, workers, cpus) in enumerate(configs):
            best = min(walls[i])
            rows.append({"bench": "batch", "path": path, "workers": workers, "cpus_per_worker": cpus,
                         "images": images, "image": "demo 320x384, 20 patches", "wall_s": best,
                         "images_per_s": images / best, "wall_s_all": walls[i],
                         "mean_worker_s_per_image": statistics.mean(worker_seconds[i]) if worker_seconds[i] else None,
                         "ray_cluster_start_s": ray_start if path == "ray" else None})  # fmt: skip
        return rows
    finally:
        import ray

        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def _demo_images(folder: Path, n: int) -> Path:
    """`n` copies of the bundled demo image in a new `folder`."""
    folder.mkdir()
    for i in range(n):
        shutil.copy(bundled.DEMO_IMAGE, folder / f"img{i:04d}.png")
    return folder


def _startup_model(name: str, folder: Path) -> tuple[Path, Path | None]:
    """(weights, card) of the model the start-up rows use: the bundled demo, or unet64 with lively weights."""
    if name == "demo":
        return Path(bundled.DEMO_WEIGHTS), None
    import torch

    from unet_fast.inference.model_card import ModelCard
    from unet_fast.models import UNet
    from unet_fast.models.weights import lively_weights

    config = {"in_channels": 1, "num_classes": 2, "base_channels": 64, "depth": 4, "norm": "batch",
              "upsample": "transpose", "padding": "same", "head": "softmax"}  # fmt: skip
    weights = folder / "unet64.pt"
    torch.save(lively_weights(UNet(**config), 0).state_dict(), weights)
    ModelCard(config, [0.5], [0.25], ["background", "object"], patch_size=256).save(folder / "unet64.json")
    return weights, folder / "unet64.json"


def _startup_rows(images: int, repeats: int, cores: int, model: str) -> list[dict]:
    """`segment --ray` with one 1-CPU actor per core: the engine built once on the driver and loaded by every
    actor (share_engine=True, issue 26) against every actor building its own (share_engine=False, as before).
    Per run: the wall time, the driver's engine time, each actor's start-up (model, card and engine: the
    manifest's worker_startup_s) and how it got its engine."""
    import pyarrow.parquet as pq
    import ray

    from unet_fast.distributed import segment_dataset

    tmp = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    try:
        folder = _demo_images(tmp / "images", images)
        weights, card = _startup_model(model, tmp)
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
        runs: dict[bool, list[dict]] = {True: [], False: []}
        for _ in range(repeats):
            for share in (True, False):
                out = tmp / f"out-{share}"
                shutil.rmtree(out, ignore_errors=True)
                start = time.perf_counter()
                report = segment_dataset([folder], weights, out, card=card, workers=cores, cpus_per_worker=1,
                                         overlay=False, progress=False, share_engine=share)  # fmt: skip
                wall = time.perf_counter() - start
                assert report.failed == 0, report.failures
                rows = pq.read_table(report.manifest).to_pylist()
                actors = {r["worker"]: (r["worker_startup_s"], r["engine"]) for r in rows}
                runs[share].append({"wall_s": wall, "driver_engine_s": report.engine_seconds,
                                    "actor_startup_s": sorted(v[0] for v in actors.values()),
                                    "actor_engine": sorted({v[1] for v in actors.values()}), "engine": report.engine})  # fmt: skip
        out_rows = []
        for share, rs in runs.items():
            startups = [s for r in rs for s in r["actor_startup_s"]]
            out_rows.append({"bench": "startup", "model": model, "share_engine": share, "workers": cores,
                             "cpus_per_worker": 1, "images": images, "repeats": repeats,
                             "median_wall_s": statistics.median(r["wall_s"] for r in rs),
                             "median_driver_engine_s": statistics.median(r["driver_engine_s"] for r in rs),
                             "median_actor_startup_s": statistics.median(startups),
                             "max_actor_startup_s": max(startups), "actor_engine": rs[0]["actor_engine"],
                             "note": rs[0]["engine"], "runs": rs})  # fmt: skip
        return out_rows
    finally:
        import ray

        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def _replica_health(url: str, replicas: int, tries: int = 40) -> dict[str, dict]:
    """GET /health until every replica answered (Serve's proxy spreads requests): replica -> its answer."""
    seen: dict[str, dict] = {}
    for _ in range(tries):
        with urllib.request.urlopen(f"{url}/health", timeout=60) as r:
            info = json.loads(r.read())
        seen[info.get("replica", "?")] = info
        if len(seen) >= replicas:
            break
    return seen


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _load(
    url: str, bodies: list[bytes], requests: int, concurrency: int, timings: list[dict] | None = None
) -> tuple[list[float], list[int], float]:
    """`concurrency` threads post bodies back to back until `requests` are done: latencies (s), batch sizes;
    each reply's Server-Timing (ms per stage inside the replica) appended to `timings`."""
    latencies, sizes, lock, next_index = [], [], threading.Lock(), [0]

    def client() -> None:
        while True:
            with lock:
                i = next_index[0]
                next_index[0] += 1
            if i >= requests:
                return
            request = urllib.request.Request(f"{url}/segment", data=bodies[i % len(bodies)], method="POST")
            t = time.perf_counter()
            with urllib.request.urlopen(request, timeout=120) as r:
                r.read()
                size = int(r.headers["X-Batch-Size"])
                stages = _server_timing(r.headers.get("Server-Timing", ""))
            with lock:
                latencies.append(time.perf_counter() - t)
                sizes.append(size)
                if timings is not None:
                    timings.append({**stages, "total": latencies[-1] * 1000})

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, sizes, time.perf_counter() - start


def _server_timing(header: str) -> dict[str, float]:
    out = {}
    for part in header.split(","):
        name, _, dur = part.strip().partition(";dur=")
        if name and dur:
            out[name] = float(dur)
    return out


def _in_process_ms(bodies: list[bytes], repeats: int, threads: int) -> dict[str, float]:
    """What a request costs without the server: decode + Segmenter.segment + PNG encode, in this process, one
    thread of calls (median ms per request), and the engine's whole-image call alone."""
    import torch

    from unet_fast.distributed.http_io import decode, mask_png
    from unet_fast.inference.segmenter import Segmenter

    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        seg = Segmenter.from_files(bundled.DEMO_WEIGHTS)
        stages: dict[str, list[float]] = {"decode": [], "segment": [], "encode": [], "engine": []}
        for i in range(repeats + 2):
            body = bodies[i % len(bodies)]
            t0 = time.perf_counter()
            image = decode(body, seg.card.in_channels, None)
            t1 = time.perf_counter()
            mask = seg.segment(image)
            t2 = time.perf_counter()
            mask_png(mask, seg.card.palette)
            t3 = time.perf_counter()
            x = seg.prepare(image)
            t4 = time.perf_counter()
            with torch.no_grad():
                (seg.runner.engine or seg.runner.predict)(x)
            t5 = time.perf_counter()
            if i >= 2:  # the first calls build the plan and arena for the size
                for k, v in (
                    ("decode", t1 - t0),
                    ("segment", t2 - t1),
                    ("encode", t3 - t2),
                    ("engine", t5 - t4),
                ):
                    stages[k].append(v * 1000)
        out = {k: statistics.median(v) for k, v in stages.items()}
        out["total"] = out["decode"] + out["segment"] + out["encode"]
        out["path"] = seg.last_strategy.mode if seg.last_strategy else "?"
        return out
    finally:
        torch.set_num_threads(saved)


def _png_bodies(size: int, n: int) -> list[bytes]:
    """`n` random gray `size` x `size` PNGs (fixed seed)."""
    rng = np.random.default_rng(0)
    bodies = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(buf, format="PNG")
        bodies.append(buf.getvalue())
    return bodies


def _serve_rows(requests: int, concurrency: int, cores: int) -> list[dict]:
    import ray
    from ray import serve

    from unet_fast.distributed.serve import APP_NAME, build_app

    bodies = _png_bodies(128, 32)
    # (replicas, threads per replica, max batch, clients)
    configs = [(1, cores, 1, 1), (1, cores, 8, 1), (1, cores, 1, concurrency), (1, cores, 8, concurrency)]
    configs += [(cores, 1, 8, concurrency)] if cores > 1 else []
    # in process at 1 thread and at all cores: two OpenMP threads on two busy cores can be 20x slower than one
    # (measured here: 544 ms vs 22 ms for a 128 x 128 image), so the faster row is the baseline
    rows = [{"bench": "in-process", "threads": t, "size": 128, "payload": "PNG 128x128 gray",
             **_in_process_ms(bodies, 30, t)} for t in sorted({1, cores})]  # fmt: skip
    # issue 29's second size: Segmenter.segment against the engine's whole-image call at 512 x 512
    big = _png_bodies(512, 4)
    rows += [{"bench": "in-process", "threads": t, "size": 512, "payload": "PNG 512x512 gray",
              **_in_process_ms(big, 8, t)} for t in sorted({1, cores})]  # fmt: skip
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    engines = Path(tempfile.mkdtemp(prefix="bench-serve-engines-"))  # fresh: the first deployment builds
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        for replicas, threads, max_batch, clients in configs:
            reused = any(engines.glob("*.ufe"))  # the engine file depends on the model and options, not replicas
            t0 = time.perf_counter()
            app = build_app(bundled.DEMO_WEIGHTS, replicas=replicas, threads=threads, max_batch=max_batch,
                            batch_wait_ms=5, engine_dir=engines)  # fmt: skip  # the engine, built (or reused) once here
            driver_s = time.perf_counter() - t0
            serve.run(app, name=APP_NAME, route_prefix="/")
            health = _replica_health(url, replicas)
            _load(url, bodies, 4 * clients, clients)  # warm-up: engines, connections, the proxy
            timings: list[dict] = []
            n = requests if clients > 1 else max(20, requests // 4)
            latencies, sizes, wall = _load(url, bodies, n, clients, timings)
            ms = np.array(latencies) * 1000
            stage = {f"median_{k}_ms": float(np.median([t.get(k, np.nan) for t in timings]))
                     for k in ("decode", "queue", "infer", "encode")}  # fmt: skip
            inside = [sum(t.get(k, 0.0) for k in ("decode", "queue", "infer", "encode")) for t in timings]
            stage["median_outside_replica_ms"] = float(
                np.median([t["total"] - i for t, i in zip(timings, inside, strict=True)])
            )
            rows.append({"bench": "serve", "replicas": replicas, "threads_per_replica": threads, **stage,
                         "max_batch": max_batch, "batch_wait_ms": 5, "concurrency": clients, "requests": n,
                         "payload": "PNG 128x128 gray",
                         "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
                         "mean_ms": float(ms.mean()), "requests_per_s": requests / wall,
                         "mean_batch_size_seen": float(np.mean(sizes)), "build_app_s": driver_s,
                         "build_app_engine": "file reused" if reused else "built",
                         "replica_startup_s": sorted(h.get("startup_s", float("nan")) for h in health.values()),
                         "replica_engine": sorted({h.get("engine", "?") for h in health.values()})})  # fmt: skip
            serve.delete(APP_NAME)
    finally:
        serve.shutdown()
        shutil.rmtree(engines, ignore_errors=True)
        ray.shutdown()
    return rows


def _markdown(doc: dict) -> str:
    m = doc["machine"]
    lines = [f"# Distributed throughput: {doc['machine_name']}", "",
             f"{m['cpu']}, {m['cores']} cores; torch {m['torch']}, ray {doc['ray']}; commit {m['commit']}"
             f"{' (dirty tree)' if m.get('dirty') else ''}; {m['date_utc']}.", "",
             f"**Machine state:** {doc['note']}", "", f"Command: `{doc['command']}`", ""]  # fmt: skip
    batch = [r for r in doc["rows"] if r["bench"] == "batch"]
    if batch:
        lines += ["## Batch: `segment` vs `segment --ray` (demo model, masks + overlays)", "",
                  "| path | workers x CPUs | images | wall s (best) | images/s | worker s/image | Ray start s |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for r in batch:
            workers = "1 process" if r["workers"] is None else str(r["workers"])
            per = "" if r["mean_worker_s_per_image"] is None else f"{r['mean_worker_s_per_image']:.3f}"
            start = "" if r["ray_cluster_start_s"] is None else f"{r['ray_cluster_start_s']:.1f}"
            lines.append(f"| {r['path']} | {workers} x {r['cpus_per_worker']} | {r['images']} | {r['wall_s']:.2f} "
                         f"| {r['images_per_s']:.2f} | {per} | {start} |")  # fmt: skip
        lines += ["", "Wall time includes building each worker's engine; `worker s/image` is the mean time one "
                  "worker spent per image (read + segment + write), from the manifest.", ""]  # fmt: skip
    startup = [r for r in doc["rows"] if r["bench"] == "startup"]
    if startup:
        lines += [f"## Engine start-up: built once on the driver vs per actor (`segment --ray`, {startup[0]['model']} "
                  "model)", "",
                  "| engine | actors x CPUs | images | wall s (median) | driver engine s | actor start-up s (median, max) "
                  "| actors' engines | engine build s paid in all |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for r in startup:
            how = "built once on the driver, file loaded by each actor" if r["share_engine"] else "built by each actor"
            total = r["median_driver_engine_s"] + (0 if r["share_engine"] else r["workers"] * r["median_actor_startup_s"])
            lines.append(f"| {how} | {r['workers']} x {r['cpus_per_worker']} | {r['images']} | {r['median_wall_s']:.2f} "
                         f"| {r['median_driver_engine_s']:.2f} | {r['median_actor_startup_s']:.2f}, {r['max_actor_startup_s']:.2f} "
                         f"| {', '.join(r['actor_engine'])} | {total:.2f} |")  # fmt: skip
        lines += ["", "Actor start-up = what one actor took to construct (weights, card and its engine: loading the "
                  "driver's file, or optimize), from the manifest (worker_startup_s); `engine build s paid in all` "
                  "= the driver's engine time plus, where each actor builds, every actor's start-up. "
                  f"Medians over {startup[0]['repeats']} runs per row, rows alternating. With as many cores as "
                  "actors the per-actor builds run side by side, so the wall time need not drop (the driver builds "
                  "before the actors start); what sharing saves is each actor's start-up (the time to scale up, or "
                  "to replace a dead actor) and the CPU spent building (the last column).", ""]  # fmt: skip
    inproc = [r for r in doc["rows"] if r["bench"] == "in-process"]
    serve_rows = [r for r in doc["rows"] if r["bench"] == "serve"]
    if inproc:
        lines += ["## In process (the same request without the server; medians)", ""]
        for r in inproc:
            lines += [f"- {r.get('size', 128)} x {r.get('size', 128)}, {r['threads']} thread(s): decode {r['decode']:.1f} ms + Segmenter.segment {r['segment']:.1f} ms "
                      f"({r['path']}) + PNG encode {r['encode']:.1f} ms = **{r['total']:.1f} ms**; the engine's "
                      f"whole-image call alone {r['engine']:.1f} ms (segment / engine = {r['segment'] / r['engine']:.2f}x)."]  # fmt: skip
        lines.append("")
    if serve_rows:
        lines += ["## Serve: `unet-fast serve` under a fixed concurrent load (128x128 PNG tiles)", "",
                  "| replicas x threads | max batch | clients | requests | p50 ms | p99 ms | requests/s | mean batch "
                  "| decode / queue / infer / encode ms | outside the replica ms | p50 over in-process ms |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        small = [r for r in inproc if r.get("size", 128) == 128]  # the served payload's size
        base = min(r["total"] for r in small) if small else float("nan")
        for r in serve_rows:
            lines.append(f"| {r['replicas']} x {r['threads_per_replica']} | {r['max_batch']} | {r['concurrency']} "
                         f"| {r['requests']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['requests_per_s']:.1f} "
                         f"| {r['mean_batch_size_seen']:.2f} | {r['median_decode_ms']:.1f} / {r['median_queue_ms']:.1f} / "
                         f"{r['median_infer_ms']:.1f} / {r['median_encode_ms']:.1f} | {r['median_outside_replica_ms']:.1f} "
                         f"| {r['p50_ms'] - base:+.1f} |")  # fmt: skip
        lines += ["", "Engine per deployment: " + "; ".join(
            f"{r['replicas']} replica(s): build_app (the engine once: {r.get('build_app_engine', '?')}) "
            f"{r.get('build_app_s', float('nan')):.2f} s, "
            f"replica start-up {', '.join(f'{v:.2f}' for v in r.get('replica_startup_s', []))} s "
            f"({', '.join(r.get('replica_engine', []))})" for r in serve_rows),
            "", "build_app builds the engine once on the driver and writes its file (the first deployment; later "
            "ones with the same model and options reuse it); every replica loads the file (`file` above) instead "
            "of optimizing: compare a replica's start-up with an actor that builds its own in the start-up table."]  # fmt: skip
        lines += ["", "Latency is measured by the clients (HTTP through Serve's proxy included); the clients run "
                  "on the same cores as the server. The stages come from the replica's Server-Timing header "
                  "(queue = waiting for the batch to fill and for the engine thread); `outside the replica` = client "
                  "latency minus them: HTTP, Serve's proxy and its handle.", ""]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--machine-name", required=True)
    p.add_argument("--note", default="", help="what else ran on the machine")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--images", type=int, default=48)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--requests", type=int, default=160)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="CPUs given to Ray (default: all)")
    p.add_argument("--skip-batch", action="store_true")
    p.add_argument("--skip-serve", action="store_true")
    p.add_argument("--skip-startup", action="store_true")
    p.add_argument("--startup-model", choices=("demo", "unet64"), default="demo",
                   help="the model of the engine start-up rows (default: the demo; unet64: base 64, random weights)")  # fmt: skip
    p.add_argument("--startup-images", type=int, default=8, help="images of each start-up run (default 8)")
    args = p.parse_args(argv)
    machine = machine_record()
    note = (
        f"{args.note + '; ' if args.note else ''}1-min load average {machine['load_average_1min']} at start"
    )
    rows = [] if args.skip_batch else _batch_rows(args.images, args.repeats, args.cores)
    if not args.skip_startup:
        rows += _startup_rows(args.startup_images, args.repeats, args.cores, args.startup_model)
    if not args.skip_serve:
        rows += _serve_rows(args.requests, args.concurrency, args.cores)
    doc = {"machine_name": args.machine_name, "machine": machine, "note": note, "ray": library_version("ray"),
           "command": "python benchmarks/bench_distributed.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "rows": rows}  # fmt: skip
    write_side_results(doc, _markdown(doc), args.out, args.machine_name, "distributed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
