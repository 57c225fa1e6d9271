"""`unet-fast bench`: time U-Net inference on this machine against its peers, with parity on every row.

Progress goes to stderr; the table and the paths of the results files go to stdout."""

from __future__ import annotations

import argparse

EXIT_CODES = """exit codes:
  0  every contender that ran is within parity, and every contender you named ran
  1  runtime failure: a contender raised while preparing or running (named in the output)
  2  bad usage or bad input (unknown workload/contender/dtype, impossible size, bad numbers)
  3  a contender ran but its output is outside the parity limits (row marked FAIL)
  4  a contender named with --contenders/--backends cannot run here (the reason is printed)
"""

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARITY, EXIT_UNAVAILABLE = 0, 1, 2, 3, 4
QUICK = {"workload": "unet-small", "size": (64, 64), "repeats": 2, "warmup": 1}
# The workloads of the README's table (benchmarks/run_all.sh runs these).
README_WORKLOADS = ("unet-small", "unet64-256", "unet64-512", "unet-bilinear", "unet-original")
DTYPES = ("float32", "float16", "bfloat16")
DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def dtype_arg(value: str) -> str:
    """--dtype's parser: a name of DTYPES, or its short alias (bf16, fp16, fp32) mapped to that name; any
    other string passes through for argparse's `choices` to reject (exit 2, listing the choices)."""
    return DTYPE_ALIASES.get(value.lower(), value.lower())


def results_suffix(dtype_name: str) -> str:
    """The results files' stem suffix: '' for float32 (the recorded name), '-bf16' / '-fp16' otherwise, so a
    bf16 run of the same machine and day does not overwrite the fp32 record."""
    short = {v: k for k, v in DTYPE_ALIASES.items()}[dtype_name]
    return "" if dtype_name == "float32" else f"-{short}"


def register(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("bench", help="time U-Net inference here against PyTorch, torch.compile, ORT, OpenVINO, MNN, ncnn",
                       description=__doc__, epilog=EXIT_CODES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    b.add_argument("--workload", default=None,
                   help="workload name, or several comma-separated (default unet64-256; --list shows all)")  # fmt: skip
    b.add_argument("--batch", type=int, default=None, help="batch size (default: the workload's)")
    b.add_argument("--size", default=None, help="input HxW instead of the workload's, e.g. 128x128 (default: the workload's)")
    b.add_argument("--dtype", default="float32", choices=DTYPES, type=dtype_arg, metavar="{float32,float16,bfloat16}",
                   help="compute dtype, parity is vs the fp32 reference (aliases fp32, fp16, bf16). bfloat16: unet_fast "
                   "cpu bf16, eager and torch.compile bf16 channels_last, OpenVINO at its default precision and "
                   "pinned f32, ONNX Runtime as an fp32 reference; the table's precision column says what each "
                   "row computed in; files get a -bf16 suffix")  # fmt: skip
    b.add_argument(
        "--threads", type=int, default=None, help="CPU threads for every contender (default: all cores)"
    )
    b.add_argument("--contenders", default=None,
                   help="comma-separated contenders to run (default: all usable here; --list shows them); 'unet_fast' "
                   "names every unet_fast backend, 'winograd-peers' MNN (precision high and normal) and ncnn, "
                   "each as a group whose members that cannot run here skip quietly")  # fmt: skip
    b.add_argument("--backends", default=None,
                   help="comma-separated unet_fast backends to include (torch,cpu,triton,cuda; 'none' for none) "
                   "(default: every usable one)")  # fmt: skip
    b.add_argument("--repeats", type=int, default=5, help="timed rounds; the median is reported (default 5)")
    b.add_argument("--warmup", type=int, default=1, help="untimed warm-up calls per contender (default 1)")
    b.add_argument("--seed", type=int, default=0, help="seed of the random input")
    b.add_argument(
        "--device", default="auto", choices=("auto", "cpu", "cuda"),
        help="where the contenders run (default: auto, cuda if visible)"
    )
    b.add_argument("--quick", action="store_true",
                   help="CI-size smoke run: unet-small at 64x64, 2 rounds, no torch.compile unless named")  # fmt: skip
    b.add_argument("--out", default="unet-fast-results", help="folder for the results files")
    b.add_argument("--no-write", action="store_true", help="print the table only, write no files")
    b.add_argument(
        "--machine-name", default=None, help="label for the results files (default from the CPU/GPU)"
    )
    b.add_argument("--note", default="", help="conditions to record beside the numbers, e.g. 'under load' (default: none; the measured "
                   "load is recorded anyway)")
    b.add_argument("--roofline", action="store_true", help="also print the roofline model of each workload")
    b.add_argument(
        "--list", action="store_true", help="list workloads and contenders (and why some cannot run)"
    )
    b.set_defaults(func=run)


def _split(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _parse_size(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    parts = value.lower().split("x")
    try:
        h, w = (int(parts[0]), int(parts[0])) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
    except ValueError:
        raise ValueError(f"--size must look like 256 or 256x320, got {value!r}") from None
    if len(parts) > 2 or h < 1 or w < 1:
        raise ValueError(f"--size must look like 256 or 256x320 with positive numbers, got {value!r}")
    return h, w


# `--contenders winograd-peers`: the CPU engines that, like ours, run 3x3 convs by Winograd (issue 25)
WINOGRAD_PEERS = ("mnn", "mnn-normal", "ncnn")


def contender_names(contenders: list[str] | None, backends: list[str] | None, quick: bool,
                    dtype_name: str = "float32") -> tuple[list[str] | None, set[str]]:  # fmt: skip
    """(the contenders to run, None = every one of the dtype's default selection; the ones named one by
    one, which must then run here). 'unet_fast' in --contenders means every unet_fast backend, and
    'winograd-peers' the Winograd CPU engines (WINOGRAD_PEERS: MNN at both precisions, ncnn), as groups: those
    skip quietly. Lists built without --contenders hold the dtype's default selection only (no
    openvino-default in a float32 run: it is a bf16 row)."""
    import torch

    from unet_fast.bench.contenders import CONTENDERS, UNET_FAST_BACKENDS, get_contender

    dtype = getattr(torch, dtype_name)
    default = [n for n, c in CONTENDERS.items() if c.in_default(dtype)]
    if contenders is None and backends is None:
        return ([n for n in default if n != "compile"] if quick else None), set()
    names = list(default) if contenders is None else []
    named: set[str] = set()
    for c in contenders or []:
        if c == "unet_fast":
            names += [f"unet_fast-{b}" for b in UNET_FAST_BACKENDS]
        elif c == "winograd-peers":
            names += list(WINOGRAD_PEERS)
        else:
            names.append(get_contender(c).name)
            named.add(c)
    if quick and contenders is None:
        names.remove("compile")
    if backends is not None:
        wanted = [] if backends == ["none"] else backends
        for b in wanted:
            if b not in UNET_FAST_BACKENDS:
                raise ValueError(
                    f"unknown backend {b!r}; choose from {', '.join(UNET_FAST_BACKENDS)} (or none)"
                )
        names = [n for n in names if not n.startswith("unet_fast-")]
        names += [f"unet_fast-{b}" for b in wanted]
        named = {n for n in named if not n.startswith("unet_fast-")} | {f"unet_fast-{b}" for b in wanted}
    return list(dict.fromkeys(names)), named


def _list(device: str, threads: int, dtype_name: str = "float32") -> int:
    import tempfile
    from pathlib import Path

    import torch

    from unet_fast.bench.contenders import CONTENDERS, Settings
    from unet_fast.bench.workloads import WORKLOADS, unavailable_workloads

    print("workloads:")
    for w in WORKLOADS.values():
        print(f"  {w.name:<14} {'x'.join(map(str, w.input_shape)):<12} {w.description}")
    for name, why in unavailable_workloads().items():
        print(f"  {name:<14} {'-':<12} NOT available: {why}")
    dtype = getattr(torch, dtype_name)
    s = Settings(device, dtype, threads, Path(tempfile.gettempdir()))
    print(f"contenders ({device}, {dtype_name}):")
    for c in CONTENDERS.values():
        why = c.check(s)
        status = "NOT usable" if why else ("usable" if c.in_default(dtype) else "if named")
        print(f"  {c.name:<16} {status:<11} {c.description}{'; ' + why if why else ''}")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    import sys

    import torch

    from unet_fast.bench import load
    from unet_fast.bench import results as res
    from unet_fast.bench.machine import default_machine_name, machine_record
    from unet_fast.bench.runner import RunConfig, resolve_threads, run_workload
    from unet_fast.bench.workloads import get_workload, unavailable_workloads

    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch sees no CUDA device here")
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    threads = resolve_threads(args.threads)
    if args.list:
        return _list(device, threads, args.dtype)
    if args.batch is not None and args.batch < 1:
        raise ValueError(f"--batch must be >= 1, got {args.batch}")
    if args.repeats < 1 or args.warmup < 0:
        raise ValueError(f"--repeats must be >= 1 and --warmup >= 0, got {args.repeats} and {args.warmup}")
    workloads = _split(args.workload) or [QUICK["workload"] if args.quick else "unet64-256"]
    for w in workloads:
        get_workload(w)  # unknown or unavailable names fail before any work (exit 2)
    size = _parse_size(args.size) or (QUICK["size"] if args.quick else None)
    repeats = min(args.repeats, QUICK["repeats"]) if args.quick else args.repeats
    names, named = contender_names(_split(args.contenders), _split(args.backends), args.quick, args.dtype)
    dtype = getattr(torch, args.dtype)

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    torch.set_num_threads(threads)
    machine = machine_record()  # at the start: the commit and load that the numbers belong to
    load_start = load.snapshot()
    if load.start_warning(load_start):
        progress(load.start_warning(load_start))
    results = []
    for w in workloads:
        cfg = RunConfig(w, args.batch, size, dtype, threads, device, repeats, args.warmup, args.seed, names)
        results.append(run_workload(cfg, progress).as_dict())
    busy = load.assess(load_start, load.snapshot())
    machine["threads"] = threads
    machine["load"] = busy.as_dict()
    machine_name = args.machine_name or default_machine_name()
    settings = {"device": device, "dtype": args.dtype, "threads": threads, "repeats": repeats, "warmup": args.warmup,
                "seed": args.seed, "batch": args.batch, "size": size, "quick": args.quick}  # fmt: skip
    extra: dict = {"workloads_unavailable": unavailable_workloads()}
    if args.roofline:
        extra["roofline_markdown"] = _roofline(workloads, args.batch, size, dtype, progress)
    doc = res.build_document(results, machine, machine_name, args.note, settings, extra)

    print(f"machine: {machine['cpu']}, {machine['cores']} cores, GPU {machine['gpu'] or 'none'}; {threads} threads "
          f"for every contender; torch {machine['torch']}; commit {machine['commit']}"
          f"{' (uncommitted changes)' if machine['dirty'] else ''}; load average {machine['load_average_1min']}")  # fmt: skip
    print("reference: pytorch eager, fp32, NCHW, on CPU; parity of every row is against it")
    if args.dtype == "bfloat16":
        print(f"{args.dtype} run: the precision column says what each row computed in; fp32 rows are references "
              "(ONNX Runtime has no bf16 convolution on CPU; OpenVINO pinned f32); each row's parity is judged by "
              "its own precision's limits")  # fmt: skip
    print(res.format_text_table(doc["rows"]) if doc["rows"] else "(no contender ran)")
    for line in res.peer_ratio_lines(doc["rows"]):
        print(line)
    for line in res.format_unavailable(results):
        print(line)
    if args.quick and names is not None and "compile" not in names and args.contenders is None:
        print("compile not run: --quick leaves torch.compile out (name it with --contenders to include it)")
    if any("not installed" in line for line in res.format_unavailable(results)):
        print('to install the missing peers: pip install -e ".[bench]"')
    if set(workloads) != set(README_WORKLOADS):
        print(f"this run: {', '.join(workloads)}. The README's table ({len(README_WORKLOADS)} workloads, every peer, "
              "median of 5 interleaved rounds, roofline): benchmarks/run_all.sh MACHINE_NAME from a source "
              "checkout (or unet-fast bench --workload " + ",".join(README_WORKLOADS) + " --roofline)")  # fmt: skip
    for line in busy.warning_lines():
        print(line)
    if not busy.busy:
        print(f"load: {busy.summary()}")
    if args.roofline:
        print(extra["roofline_markdown"])
    if not args.no_write:
        from pathlib import Path

        stem = res.results_stem(machine_name) + results_suffix(args.dtype)
        paths = res.write_results(doc, Path(args.out), stem)
        print("results: " + ", ".join(str(p) for p in paths.values()))
        if "png" not in paths:
            print('no plot: matplotlib is not installed (pip install -e ".[bench]")')
    return _exit_code(results, doc["rows"], named)


def _roofline(workloads: list[str], batch: int | None, size: tuple[int, int] | None, dtype, progress) -> str:
    from unet_fast.bench.roofline import roofline_for_workload

    parts = []
    for w in workloads:
        progress(f"[{w}] roofline model (measuring this CPU's sgemm rate and copy bandwidth) ...")
        parts.append(roofline_for_workload(w, batch, size, dtype).markdown())
    return "\n\n".join(parts)


def _exit_code(results: list[dict], rows: list[dict], named: set[str]) -> int:
    if any(r["failed"] for r in results):
        return EXIT_FAILED
    if not all(r["parity_ok"] for r in rows):
        return EXIT_PARITY
    if any(named & set(r["skipped"]) for r in results):
        return EXIT_UNAVAILABLE
    return EXIT_OK if rows else EXIT_FAILED
