"""Results files: JSON rows (with the machine, threads, versions and commit), a markdown table, a PNG
plot of latency per contender per workload, and the same table as plain text for the terminal."""

from __future__ import annotations

import datetime as _dt
import json
import math
import sys
from pathlib import Path

SCHEMA = 1
# The peers unet_fast is measured against in the README's last column ("cpu / fastest peer"): the compilers
# and runtimes, and the Winograd CPU engines MNN and ncnn (issue 25: the strongest fp32 peers). Eager
# PyTorch is the reference, not a peer.
RATIO_PEERS = ("compile", "onnxruntime", "openvino", "tensorrt", "mnn", "mnn-normal", "ncnn")
# The peers per precision a row computed in (its `precision`). At bf16/fp16 eager channels_last is a peer
# (oneDNN's bf16 convolutions; the reference is the fp32 eager model, not it), and OpenVINO counts at its
# default precision (the pinned-f32 row is an fp32 reference there). shared/BENCHMARKING.md lists them.
PEERS = {
    "fp32": RATIO_PEERS,
    "bf16": ("eager-cl", "compile", "openvino-default", "tensorrt"),
    "fp16": ("eager-cl", "compile", "tensorrt"),
}


def _group(row: dict) -> tuple:
    return (row["workload"], tuple(row["input_shape"]), row["dtype"], row.get("device"))


# a run's dtype name -> the precision name of its rows (contenders.PRECISION_NAMES without importing torch:
# `python -m unet_fast.bench.results` re-renders a results file quickly)
_RUN_PRECISION = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def row_precision(row: dict) -> str:
    """What the row computed in: its `precision`, or (rows written before that key existed) the run's dtype."""
    return row.get("precision") or _RUN_PRECISION.get(row["dtype"], row["dtype"])


def add_peer_ratios(rows: list[dict]) -> None:
    """Set `fastest_peer` and `vs_fastest_peer` (latency over the fastest peer's: < 1 is faster) on each
    unet_fast row, per workload, against the fastest peer (PEERS) *of the row's own precision* with parity
    ok; a bf16/fp16 unet_fast row also gets `fastest_fp32_peer` and `vs_fastest_fp32_peer` when fp32 peer
    rows are in the same run (the bf16 run keeps ONNX Runtime and OpenVINO f32 as fp32 references)."""
    fastest: dict[tuple, dict] = {}
    for r in rows:
        prec = row_precision(r)
        if r["contender"] in PEERS.get(prec, ()) and r["parity_ok"]:
            key = (_group(r), prec)
            if key not in fastest or r["median_ms"] < fastest[key]["median_ms"]:
                fastest[key] = r
    for r in rows:
        if not r["contender"].startswith("unet_fast-"):
            continue
        prec = row_precision(r)
        peer = fastest.get((_group(r), prec))
        if peer is not None:
            r["fastest_peer"] = peer["contender"]
            r["vs_fastest_peer"] = r["median_ms"] / peer["median_ms"]
        fp32_peer = fastest.get((_group(r), "fp32")) if prec != "fp32" else None
        if fp32_peer is not None:
            r["fastest_fp32_peer"] = fp32_peer["contender"]
            r["vs_fastest_fp32_peer"] = r["median_ms"] / fp32_peer["median_ms"]
        # our fp32 reference row in a bf16 run (unet_fast-cpu-fp32): does asking for bf16 pay on this CPU?
        bf16_peer = fastest.get((_group(r), "bf16")) if prec == "fp32" else None
        if bf16_peer is not None:
            r["fastest_bf16_peer"] = bf16_peer["contender"]
            r["vs_fastest_bf16_peer"] = r["median_ms"] / bf16_peer["median_ms"]


def _peer_row(rows: list[dict], r: dict, name: str) -> dict:
    return next(x for x in rows if x["contender"] == name and _group(x) == _group(r))


def peer_ratio_lines(rows: list[dict]) -> list[str]:
    """The README's last column, one line per unet_fast row (or why there is none); a bf16/fp16 row gets a
    line against the fastest peer of its precision and, where fp32 peers ran, one against the fastest fp32
    peer. fp32 rows read exactly as before precisions were recorded (the README quotes one)."""
    lines = []
    ratio_note = "(latency ratio: below 1 is faster)"
    for r in rows:
        if not r["contender"].startswith("unet_fast-"):
            continue
        where = f"{r['workload']} {'x'.join(map(str, r['input_shape']))}"
        prec = row_precision(r)
        who, of = (r["contender"], "") if prec == "fp32" else (f"{r['contender']} ({prec})", f"{prec} ")
        if r.get("vs_fastest_peer") is None:
            lines.append(f"{where}: {who} / fastest {of}peer: - (no {of}peer of {', '.join(PEERS.get(prec, ()))} "
                         "ran with parity ok)")  # fmt: skip
        else:
            peer = _peer_row(rows, r, r["fastest_peer"])
            lines.append(f"{where}: {who} / fastest {of}peer ({r['fastest_peer']}, {peer['median_ms']:.1f} ms) = "
                         f"{r['vs_fastest_peer']:.2f}x  {ratio_note}")  # fmt: skip
        if r.get("vs_fastest_fp32_peer") is not None:
            peer = _peer_row(rows, r, r["fastest_fp32_peer"])
            lines.append(f"{where}: {who} / fastest fp32 peer ({r['fastest_fp32_peer']}, {peer['median_ms']:.1f} "
                         f"ms) = {r['vs_fastest_fp32_peer']:.2f}x  {ratio_note}")  # fmt: skip
        if r.get("vs_fastest_bf16_peer") is not None:
            peer = _peer_row(rows, r, r["fastest_bf16_peer"])
            lines.append(f"{where}: {who} (fp32) / fastest bf16 peer ({r['fastest_bf16_peer']}, "
                         f"{peer['median_ms']:.1f} ms) = {r['vs_fastest_bf16_peer']:.2f}x  {ratio_note}")  # fmt: skip
    return lines


def build_document(results: list[dict], machine: dict, machine_name: str, note: str = "",
                   settings: dict | None = None, extra: dict | None = None) -> dict:  # fmt: skip
    """The results file's content. Every row also carries the machine name, threads and commit, so a
    row copied out of the file still says where it came from."""
    rows = []
    for r in results:
        for row in r["rows"]:
            rows.append({"machine": machine_name, "commit": machine.get("commit"), "torch": machine.get("torch"),
                         "load_note": note, **row})  # fmt: skip
            if machine.get("load") is not None:
                rows[-1]["machine_busy"] = machine["load"]["busy"]
    add_peer_ratios(rows)
    return {
        "schema": SCHEMA,
        "machine_name": machine_name,
        "machine": machine,
        "note": note,
        "settings": settings or {},
        "rows": rows,
        "workloads": [{k: v for k, v in r.items() if k != "rows"} for r in results],
        **(extra or {}),
    }


def results_stem(machine_name: str, date: _dt.date | None = None) -> str:
    date = date or _dt.datetime.now(_dt.timezone.utc).date()
    return f"{machine_name}-{date.isoformat()}"


def _fmt(v: float | None, spec: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)


def _ratio_cell(r: dict, key: str) -> str:
    ratio = r.get(f"vs_{key}")
    return "-" if ratio is None else f"{ratio:.2f}x {r[key]}"


def table_rows(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and cells. `precision` is what each row computed in; '/ fastest peer' is a unet_fast row's
    ratio to the fastest peer of its own precision, naming it; '/ fastest fp32 peer' appears when a bf16 or
    fp16 unet_fast row has an fp32 peer to compare with (the bf16 table's fp32 reference rows)."""
    fp32_column = any(r.get("vs_fastest_fp32_peer") is not None for r in rows)
    header = ["workload", "contender", "precision", "median ms", "min-max ms", "vs eager", "/ fastest peer",
              *(["/ fastest fp32 peer"] if fp32_column else []), "max abs", "rel L2", "argmax agree", "parity",
              "setup s", "note"]  # fmt: skip
    body = []
    for r in rows:
        p = r["parity"]
        body.append([
            f"{r['workload']} {'x'.join(map(str, r['input_shape']))} {r['dtype']}", r["contender"], row_precision(r),
            _fmt(r["median_ms"], ".1f"), f"{_fmt(r['min_ms'], '.1f')}-{_fmt(r['max_ms'], '.1f')}",
            _fmt(r.get("speedup_vs_eager"), ".2f") + ("x" if r.get("speedup_vs_eager") else ""),
            _ratio_cell(r, "fastest_peer"), *([_ratio_cell(r, "fastest_fp32_peer")] if fp32_column else []),
            _fmt(p["max_abs"], ".2e"), _fmt(p["rel_l2"], ".2e"), f"{p['argmax_agreement']:.4%}",
            "ok" if r["parity_ok"] else "FAIL", _fmt(r.get("setup_s"), ".1f"), r.get("note", ""),
        ])  # fmt: skip
    return header, body


_RIGHT = {"median ms", "min-max ms", "vs eager", "/ fastest peer", "/ fastest fp32 peer", "max abs", "rel L2",
          "argmax agree", "setup s"}  # fmt: skip


def format_text_table(rows: list[dict]) -> str:
    header, body = table_rows(rows)
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    right = {i for i, h in enumerate(header) if h in _RIGHT}
    lines = []
    for cells in [header, *body]:
        lines.append("  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in
                               enumerate(zip(cells, widths, strict=True))).rstrip())  # fmt: skip
        if cells is header:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_markdown_table(rows: list[dict]) -> str:
    header, body = table_rows(rows)
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(c.replace("|", "/") for c in b) + " |" for b in body]
    return "\n".join(out)


def format_unavailable(results: list[dict]) -> list[str]:
    lines = []
    for r in results:
        for name, why in r.get("skipped", {}).items():
            lines.append(f"{r['workload']}: {name} not run: {why}")
        for name, why in r.get("failed", {}).items():
            lines.append(f"{r['workload']}: {name} FAILED: {why}")
    return lines


def markdown_document(doc: dict) -> str:
    m = doc["machine"]
    lines = [
        f"# Benchmark results: {doc['machine_name']}",
        "",
        f"- machine: {m.get('cpu')}, {m.get('cores')} cores, GPU: {m.get('gpu') or 'none'}",
        f"- threads: {', '.join(sorted({str(r['threads']) for r in doc['rows']})) or '-'} (set identically for "
        "every contender)",
        f"- versions: python {m.get('python')}, torch {m.get('torch')}, "
        + ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items() if v),
        f"- commit: {m.get('commit')}{' (uncommitted changes)' if m.get('dirty') else ''}; date {m.get('date_utc')}; "
        f"1-min load average at start {m.get('load_average_1min')}",
    ]  # fmt: skip
    if doc.get("note"):
        lines.append(f"- conditions: {doc['note']}")
    if m.get("load"):
        from unet_fast.bench.load import CLEAN_HOWTO

        busy = m["load"]["busy"]
        lines.append(f"- load during the run: {'**' if busy else ''}{_load_summary(m['load'])}{'**' if busy else ''}")
        if busy:
            lines += ["", f"> **Warning: the machine was busy; these timings are not a clean figure.** {CLEAN_HOWTO}."]
    how = ("pytest-benchmark pedantic rounds, one contender after another" if doc.get("settings", {}).get("source")
           else "interleaved rounds (every contender once per round, so load bursts hit all alike)")  # fmt: skip
    lines += ["", f"Median of {how}, with min-max; parity against the fp32 PyTorch eager reference on the same "
              "random input; 'vs eager' is eager NCHW's median over the row's; '/ fastest peer' is a unet_fast "
              f"row's median over the fastest of {', '.join(RATIO_PEERS)} (below 1 is faster)."]  # fmt: skip
    precisions = {row_precision(r) for r in doc["rows"]}
    if precisions - {"fp32"}:
        lines[-1] += (" 'precision' is what each row computed in, and each row's parity is judged by its precision's "
                      "limits. A bf16 unet_fast row's '/ fastest peer' is against the fastest bf16 peer "
                      f"({', '.join(PEERS['bf16'])}), its '/ fastest fp32 peer' against the fastest fp32 one of "
                      f"{', '.join(PEERS['fp32'])} (in a bf16 run ONNX Runtime and OpenVINO pinned f32 are fp32 "
                      "reference rows).")  # fmt: skip
    lines += ["", format_markdown_table(doc["rows"])]
    ratios = peer_ratio_lines(doc["rows"])
    if ratios:
        lines += ["", *[f"- {r}" for r in ratios]]
    unavailable = format_unavailable(doc["workloads"])
    if unavailable:
        lines += ["", "Not run here:", "", *[f"- {u}" for u in unavailable]]
    if doc.get("roofline_markdown"):
        lines += ["", doc["roofline_markdown"]]
    return "\n".join(lines) + "\n"


def _load_summary(load: dict) -> str:
    from unet_fast.bench.load import LoadReport

    return LoadReport(**load).summary()


def plot_latency(rows: list[dict], path: Path, title: str) -> Path | None:
    """Horizontal bars: median latency per contender, one panel per workload, min-max as error bars.
    Returns None (and writes nothing) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(f"{r['workload']} {'x'.join(map(str, r['input_shape']))} {r['dtype']}", []).append(
            r
        )
    if not groups:
        return None
    fig, axes = plt.subplots(len(groups), 1, figsize=(8, 1.2 + 0.45 * sum(len(g) for g in groups.values())
                                                          + 0.6 * len(groups)), squeeze=False)  # fmt: skip
    for ax, (name, g) in zip(axes[:, 0], groups.items(), strict=True):
        g = sorted(g, key=lambda r: r["median_ms"], reverse=True)
        med = [r["median_ms"] for r in g]
        err = [[r["median_ms"] - r["min_ms"] for r in g], [r["max_ms"] - r["median_ms"] for r in g]]
        colors = ["tab:red" if not r["parity_ok"] else ("tab:green" if r["contender"].startswith("unet_fast")
                                                         else "tab:blue") for r in g]  # fmt: skip
        # a row that computed in another precision than the run's says so in its label (bf16 run: fp32 refs)
        labels = [r["contender"] if row_precision(r) == _RUN_PRECISION.get(r["dtype"]) else
                  f"{r['contender']} ({row_precision(r)})" for r in g]  # fmt: skip
        ax.barh(labels, med, xerr=err, color=colors, capsize=3)
        for i, r in enumerate(g):
            ax.text(r["max_ms"], i, f"  {r['median_ms']:.1f} ms", va="center", fontsize=8)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("latency, ms (median, min-max; red = parity FAIL)")
        ax.set_xlim(0, max(r["max_ms"] for r in g) * 1.25)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_title(doc: dict) -> str:
    title = f"{doc['machine_name']} ({doc['machine'].get('cpu')}, commit {doc['machine'].get('commit')})"
    note = doc.get("note") or ""
    return title + ("\n" + (note if len(note) <= 110 else note[:107] + "...") if note else "")


def write_results(doc: dict, out_dir: Path, stem: str, plot: bool = True) -> dict[str, Path]:
    """Write <stem>.json, <stem>.md and (with matplotlib) <stem>.png under out_dir; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{stem}.json", "markdown": out_dir / f"{stem}.md"}
    paths["json"].write_text(json.dumps(doc, indent=1, default=str) + "\n")
    paths["markdown"].write_text(markdown_document(doc))
    if plot:
        png = plot_latency(doc["rows"], out_dir / f"{stem}.png", plot_title(doc))
        if png is not None:
            paths["png"] = png
    return paths


def write_side_results(doc: dict, markdown: str, out_dir: str | Path, machine_name: str, suffix: str) -> Path:
    """A side benchmark's record (bench_wsi, bench_distributed, bench_startup): <machine>-<date>-<suffix>.json
    and .md under out_dir; prints the markdown and where it went; returns the stem (no extension)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{results_stem(machine_name)}-{suffix}"
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown + "\n")
    print(markdown)
    print(f"wrote {stem}.json and .md", file=sys.stderr)
    return stem


def main(argv: list[str] | None = None) -> int:
    """`python -m unet_fast.bench.results FILE.json`: write the markdown and the plot again from a results
    file (e.g. after the table format changed), beside it."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m unet_fast.bench.results", description=main.__doc__)
    p.add_argument("json", type=Path)
    args = p.parse_args(argv)
    doc = json.loads(args.json.read_text())
    md, png = args.json.with_suffix(".md"), args.json.with_suffix(".png")
    md.write_text(markdown_document(doc))
    written = plot_latency(doc["rows"], png, plot_title(doc))
    print(f"wrote {md}" + (f", {png}" if written else " (matplotlib is not installed: no plot)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
