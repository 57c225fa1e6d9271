"""The engine file container: a fixed prefix, a JSON header and a blob of raw tensor bytes. No pickle.

Layout (all integers little-endian):

    0   8   magic b"\\x89UFE\\r\\n\\x1a\\n"  (PNG-style: a text-mode transfer or a foreign file fails here)
    8   4   format version (u32)
    12  4   reserved, 0
    16  8   header length H (u64)
    24  8   data offset D (u64, a multiple of 4096: the blob is page-aligned, so mapped tensors are aligned)
    32  8   data length L (u64); the file is exactly D + L bytes
    40  32  sha256 of the header bytes
    72  H   the header: UTF-8 JSON (see engine/artifact.py for its fields)
    ..      zero padding up to D
    D   L   the data: storages at 64-byte aligned offsets, each with its CRC-32 in the header

Reading checks, in this order, and names the first thing wrong in an `EngineFileError` (a ValueError): the
size of the prefix, the magic (naming what the file looks like instead: a PNG, a zip archive such as a
`torch.save` checkpoint, a pickle, JSON), the version (older than this unet_fast reads, or newer), the sizes
(truncated, trailing bytes), the header's sha256, the JSON itself, and then, per storage, its CRC-32 (the
data is read through a private memory map: nothing is copied, and what the engine writes never reaches the
file). Nothing in a file is ever executed: the header is parsed by `json`, the tensors are bytes.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
import sys
import tempfile
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["FORMAT_VERSION", "MAGIC", "MIN_FORMAT_VERSION", "EngineFileError", "RawFile", "read_file", "write_file"]

MAGIC = b"\x89UFE\r\n\x1a\n"
FORMAT_VERSION = 1  # bump when the header's meaning changes (engine/artifact.py); older ones: see MIN
MIN_FORMAT_VERSION = 1  # the oldest version this unet_fast reads (0 was never released: a draft)
_PREFIX = struct.Struct("<8sIIQQQ32s")
PREFIX_SIZE = _PREFIX.size  # 72
DATA_ALIGN = 4096
STORAGE_ALIGN = 64
MAX_HEADER = 256 << 20  # a graph of 10^5 nodes is ~50 MiB of JSON; more is not an engine file


class EngineFileError(ValueError):
    """An engine file that cannot be loaded: truncated, corrupt, foreign, of another format version, or
    describing something this unet_fast cannot build. `path`: the file; `problem`: what is wrong."""

    def __init__(self, path: str | os.PathLike | None, problem: str) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        where = f"{self.path}: " if self.path else ""
        super().__init__(f"{where}not a loadable unet_fast engine file: {problem}")


@dataclass
class RawFile:
    """A read and checked engine file: its header (parsed JSON) and one uint8 CPU tensor per storage (views of
    a private memory map of the file, or of a copy of its bytes)."""

    path: str | None
    version: int
    header: dict[str, Any]
    storages: list[torch.Tensor]
    nbytes: int


def _align(n: int, to: int) -> int:
    return -(-n // to) * to


def _padded(views: list[tuple[int, memoryview]]) -> Iterator[bytes | memoryview]:
    """The data section's bytes in order: each storage's view at its offset, zeros in the alignment gaps."""
    pos = 0
    for off, mv in views:
        if off > pos:
            yield bytes(off - pos)
        yield mv
        pos = off + len(mv)


def write_file(path: str | os.PathLike, header: dict[str, Any], storages: list[torch.Tensor]) -> str:
    """Write `header` (JSON-able; its "storages" entry is filled here: offset, nbytes, crc32 of each) and the
    bytes of `storages` (uint8 CPU tensors) to `path`, atomically: a temporary file in the same folder, fsync,
    os.replace, fsync of the folder. Two writers of one path both succeed; a reader sees one whole file or
    the other, never a mix. Returns the content hash (sha256 of the data, hex), also stored in the header.
    Raises OSError for an unwritable place."""
    if sys.byteorder != "little":
        raise OSError("engine files are little-endian; this machine is big-endian")
    entries, offset = [], 0
    data_hash = hashlib.sha256()
    views = []
    for s in storages:
        mv = memoryview(s.numpy()) if s.numel() else memoryview(b"")
        offset = _align(offset, STORAGE_ALIGN)
        entries.append({"offset": offset, "nbytes": len(mv), "crc32": zlib.crc32(mv)})
        views.append((offset, mv))
        offset += len(mv)
    data_len = offset
    # the content hash covers the data exactly as written (padding included)
    for chunk in _padded(views):
        data_hash.update(chunk)
    header = {**header, "storages": entries, "content_sha256": data_hash.hexdigest(), "data_length": data_len}
    blob = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    data_offset = _align(PREFIX_SIZE + len(blob), DATA_ALIGN)
    prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, 0, len(blob), data_offset, data_len, hashlib.sha256(blob).digest())
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(prefix)
            f.write(blob)
            f.write(bytes(data_offset - PREFIX_SIZE - len(blob)))
            for chunk in _padded(views):
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(folder)
    return header["content_sha256"]


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a directory; the rename is still atomic
    finally:
        os.close(fd)


def _foreign(head: bytes) -> str:
    """What a file that does not start with our magic looks like."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "it is a PNG image"
    if head.startswith(b"PK\x03\x04"):
        return ("it is a zip archive (torch.save writes these: a PyTorch checkpoint or model, not an engine; "
                "make an engine file with unet_fast.save)")  # fmt: skip
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "it is a Python pickle, which is never read here (unpickling can run code)"
    if head.lstrip()[:1] in (b"{", b"["):
        return "it is JSON or text, not an engine file"
    if head.startswith(b"\x89UFE"):
        return "its magic is damaged (it was transferred in text mode, or corrupted)"
    if head.startswith(b"\x08") or head.startswith(b"ONNX"):
        return "it looks like an ONNX / protobuf file (unet-fast export onnx writes those), not an engine file"
    return f"it does not start with the engine magic (first bytes {head[:8]!r})"


def read_file(source: str | os.PathLike | bytes | bytearray | memoryview, *, verify: bool = True) -> RawFile:
    """Read and check an engine file (a path, or its bytes). `verify`: check every storage's CRC-32 (a pass over
    the data, on up to 4 threads: ~0.15 s per 600 MiB on 2 cores; off only for a file just checked). Raises EngineFileError naming what is
    wrong, FileNotFoundError / OSError when the path cannot be read."""
    path: str | None
    if isinstance(source, (bytes, bytearray, memoryview)):
        path, buf = None, bytearray(source)
        size = len(buf)
    else:
        path = os.fspath(source)
        if os.path.isdir(path):
            raise IsADirectoryError(f"{path} is a folder, not an engine file (unet_fast.save and unet-fast export "
                                    "engine write one file, conventionally *.ufe)")  # fmt: skip
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < PREFIX_SIZE:
                head = f.read(PREFIX_SIZE)
                if not head.startswith(MAGIC[:4]) and head:
                    raise EngineFileError(path, _foreign(head))
                raise EngineFileError(path, f"truncated: {size} bytes, shorter than the {PREFIX_SIZE}-byte prefix")
            # a private (copy-on-write) mapping: tensors read the file's pages, a write would stay in memory
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)  # type: ignore[assignment]
    if size < PREFIX_SIZE:
        raise EngineFileError(path, f"truncated: {size} bytes, shorter than the {PREFIX_SIZE}-byte prefix")
    magic, version, reserved, hlen, doff, dlen, hsha = _PREFIX.unpack_from(buf, 0)
    if magic != MAGIC:
        raise EngineFileError(path, _foreign(bytes(buf[:16])))
    if version > FORMAT_VERSION:
        raise EngineFileError(path, f"format version {version} is newer than this unet_fast reads "
                                    f"({MIN_FORMAT_VERSION}..{FORMAT_VERSION}): upgrade unet_fast, or save the "
                                    "engine again with this one")  # fmt: skip
    if version < MIN_FORMAT_VERSION:
        raise EngineFileError(path, f"format version {version} is older than this unet_fast reads "
                                    f"({MIN_FORMAT_VERSION}..{FORMAT_VERSION}; version 0 was an unreleased draft "
                                    "with no migration): make the file again from the model (unet_fast.save, "
                                    "or unet-fast export engine)")  # fmt: skip
    if hlen > MAX_HEADER or doff < PREFIX_SIZE + hlen or doff % DATA_ALIGN or reserved:
        raise EngineFileError(path, f"corrupt prefix (header {hlen} bytes, data at {doff}, reserved {reserved})")
    if PREFIX_SIZE + hlen > size or doff + dlen > size:
        raise EngineFileError(path, f"truncated: {size} bytes, the prefix announces {doff + dlen}")
    if doff + dlen < size:
        raise EngineFileError(path, f"{size - doff - dlen} unexpected bytes after the data (the file was "
                                    "appended to or is corrupt)")  # fmt: skip
    blob = bytes(buf[PREFIX_SIZE : PREFIX_SIZE + hlen])
    if hashlib.sha256(blob).digest() != hsha:
        raise EngineFileError(path, "the header's checksum does not match: the file is corrupt")
    if any(buf[PREFIX_SIZE + hlen : doff]):
        raise EngineFileError(path, "the padding after the header is not zero: the file is corrupt")
    try:
        header = json.loads(blob.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as e:
        raise EngineFileError(path, f"the header is not valid JSON ({e})") from None
    if not isinstance(header, dict) or header.get("format") != "unet_fast.engine":
        raise EngineFileError(path, "the header does not describe a unet_fast engine")
    if header.get("format_version") != version or header.get("data_length") != dlen:
        raise EngineFileError(path, "the header disagrees with the prefix (version or data length)")
    storages = _storages(path, buf, header.get("storages"), doff, dlen, verify)
    return RawFile(path, version, header, storages, size)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _storages(path: str | None, buf: Any, entries: Any, doff: int, dlen: int, verify: bool) -> list[torch.Tensor]:
    if not isinstance(entries, list):
        raise EngineFileError(path, "the header lists no storages")
    out = []
    end = 0  # storages are stored in order, aligned, the gaps zero (checked with `verify`: a flip anywhere fails)
    for i, e in enumerate(entries):
        if not (isinstance(e, dict) and all(isinstance(e.get(k), int) and not isinstance(e.get(k), bool)
                                            for k in ("offset", "nbytes", "crc32"))):  # fmt: skip
            raise EngineFileError(path, f"storage {i}: malformed entry {str(e)[:80]}")
        off, n = e["offset"], e["nbytes"]
        if off < end or n < 0 or off % STORAGE_ALIGN or off + n > dlen:
            raise EngineFileError(path, f"storage {i}: bytes {off}..{off + n} outside the data ({dlen} bytes) or "
                                        "overlapping the one before")  # fmt: skip
        if verify and any(buf[doff + end : doff + off]):
            raise EngineFileError(path, f"the padding before storage {i} is not zero: the file is corrupt")
        end = off + n
        if n == 0:
            out.append(torch.empty(0, dtype=torch.uint8))
            continue
        out.append(torch.frombuffer(buf, dtype=torch.uint8, count=n, offset=doff + off))
    if verify and any(buf[doff + end : doff + dlen]):
        raise EngineFileError(path, "the data ends with bytes no storage owns: the file is corrupt")
    if verify:
        for i, (t, crc) in enumerate(zip(out, _crc32s(out), strict=True)):
            if crc != entries[i]["crc32"]:
                raise EngineFileError(path, f"storage {i} ({t.numel()} bytes at {doff + entries[i]['offset']}) "
                                            "fails its CRC-32: the file is corrupt")  # fmt: skip
    return out


def _crc32s(storages: list[torch.Tensor]) -> list[int]:
    """The CRC-32 of each storage, on up to 4 threads: zlib releases the GIL on large buffers, and this pass
    (reading every page of the file) is most of load()'s time: ~0.2 s per 600 MiB on one core."""
    views = [memoryview(t.numpy()) for t in storages]
    workers = min(4, os.cpu_count() or 1, len(views))
    if workers < 2 or sum(len(v) for v in views) < 64 << 20:
        return [zlib.crc32(v) for v in views]
    # largest first, so the big storages do not end up last on one thread
    order = sorted(range(len(views)), key=lambda j: -len(views[j]))
    with ThreadPoolExecutor(workers, thread_name_prefix="unet_fast-crc") as pool:
        crcs = dict(zip(order, pool.map(lambda j: zlib.crc32(views[j]), order), strict=True))
    return [crcs[j] for j in range(len(views))]
