"""The job's manifest: one Parquet row per input (what was read, what came out, how long it took, which
weights). Written by the driver only: in parts while the job runs (a killed driver loses at most the
last few seconds of rows), then as one `manifest.parquet` in input order. A rerun reads it back to skip
inputs already done with the same weights and settings."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

MANIFEST = "manifest.parquet"
PARTS = ".manifest-parts"  # folder of part files while a job runs


def schema():
    import pyarrow as pa

    return pa.schema([
        pa.field("input", pa.string(), nullable=False),  # the path as listed (absolute)
        pa.field("name", pa.string(), nullable=False),  # output stem: <name>_mask.png
        pa.field("height", pa.int64()), pa.field("width", pa.int64()), pa.field("channels", pa.int64()),
        pa.field("class_fractions", pa.list_(pa.float64())),  # per class index: share of the pixels
        pa.field("status", pa.string(), nullable=False),  # "ok" | "failed"
        pa.field("error", pa.string()),  # "<ExceptionType>: <message>" when failed
        pa.field("mask", pa.string()), pa.field("overlay", pa.string()),  # file names inside out_dir
        pa.field("seconds", pa.float64()),  # read + segment + write, in the worker
        pa.field("weights_hash", pa.string()),  # sha256 of the weights file
        pa.field("settings_hash", pa.string()),  # sha256 of the model card + options (see settings_hash)
        pa.field("backend", pa.string()), pa.field("worker", pa.string()),  # "<host>:<pid>"
        # how the worker got its engine: "file" (the driver's engine file), "built", "cache", "reference";
        # and the seconds it took to start (model, card, engine)
        pa.field("engine", pa.string()), pa.field("worker_startup_s", pa.float64()),
        pa.field("resumed", pa.bool_()),  # True: done by an earlier run with the same hashes, not redone
    ])  # fmt: skip


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def settings_hash(card_json: dict, options: dict) -> str:
    """sha256 of what decides a mask's bytes besides the weights: the model card and the options."""
    blob = json.dumps({"card": card_json, "options": options}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def to_table(rows: Iterable[dict], class_names: list[str] | None = None):
    import pyarrow as pa

    s = schema()
    rows = list(rows)
    table = pa.Table.from_pylist([{f.name: r.get(f.name) for f in s} for r in rows], schema=s)
    if class_names is not None:
        table = table.replace_schema_metadata({b"class_names": json.dumps(class_names).encode()})
    return table


def write_part(out_dir: Path, index: int, rows: list[dict]) -> None:
    import pyarrow.parquet as pq

    if not rows:
        return
    parts = out_dir / PARTS
    parts.mkdir(exist_ok=True)
    tmp = parts / f".part-{index:06d}.tmp"
    pq.write_table(to_table(rows), tmp)
    os.replace(tmp, parts / f"part-{index:06d}.parquet")


def next_part_index(out_dir: Path) -> int:
    """The first unused part number: a run after a killed one must not overwrite the parts it left,
    since the rows it reuses from them are written again only in the final manifest."""
    parts = sorted((out_dir / PARTS).glob("part-*.parquet")) if (out_dir / PARTS).is_dir() else []
    return int(parts[-1].stem.removeprefix("part-")) + 1 if parts else 0


def read_rows(out_dir: Path) -> list[dict]:
    """Rows of a previous run: manifest.parquet, then any parts a killed run left (later rows win)."""
    import pyarrow.parquet as pq

    files = [out_dir / MANIFEST] if (out_dir / MANIFEST).is_file() else []
    if (out_dir / PARTS).is_dir():
        files += sorted((out_dir / PARTS).glob("part-*.parquet"))
    rows: list[dict] = []
    for f in files:
        try:
            rows += pq.read_table(f).to_pylist()
        except Exception:  # a torn file from a killed run: its inputs are simply redone
            continue
    return rows


def write_manifest(out_dir: Path, rows: list[dict], class_names: list[str]) -> Path:
    """The final manifest (atomic rename), then the parts are removed."""
    import pyarrow.parquet as pq

    path = out_dir / MANIFEST
    tmp = out_dir / f".{MANIFEST}.tmp"
    pq.write_table(to_table(rows, class_names), tmp)
    os.replace(tmp, path)
    parts = out_dir / PARTS
    if parts.is_dir():
        for f in parts.iterdir():
            f.unlink(missing_ok=True)
        parts.rmdir()
    return path


def reusable(row: dict, out_dir: Path, weights: str, settings: str, overlay: bool) -> bool:
    """A previous row counts as done when it succeeded with the same weights and settings and its
    outputs are still there."""
    if (
        row.get("status") != "ok"
        or row.get("weights_hash") != weights
        or row.get("settings_hash") != settings
    ):
        return False
    if not row.get("mask") or not (out_dir / row["mask"]).is_file():
        return False
    return not overlay or (bool(row.get("overlay")) and (out_dir / row["overlay"]).is_file())
