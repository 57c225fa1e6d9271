"""Bad inputs for the batch tests of every entry point (`segment`, `Segmenter.segment_files`, `segment
--ray`): one maker per kind, each writing a file (or folder) that must fail by name while the good inputs
around it are segmented. Imported by tests/inference and tests/distributed (tests/ is on sys.path)."""

from __future__ import annotations

import builtins
import io
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

RUNNING_AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def png_bytes_with_size(width: int, height: int, bit_depth: int = 8, colour_type: int = 0) -> bytes:
    """A PNG whose header claims width x height but which holds a few bytes of pixel data: refused from
    its header (too large) or, if decoded, truncated."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))  # fmt: skip


def _not_an_image(folder: Path, stem: str, out: Path) -> Path:
    (path := folder / f"{stem}.png").write_bytes(b"this is a text file, not a PNG\n")
    return path


def _truncated_png(folder: Path, stem: str, out: Path) -> Path:
    path = folder / f"{stem}.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (60, 50), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _empty(folder: Path, stem: str, out: Path) -> Path:
    (path := folder / f"{stem}.tif").write_bytes(b"")
    return path


def _unreadable(folder: Path, stem: str, out: Path) -> Path:
    path = folder / f"{stem}.png"
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(path)
    path.chmod(0)  # root reads it anyway: deny_reads() plays the kernel's refusal there
    return path


def _directory(folder: Path, stem: str, out: Path) -> Path:
    (path := folder / f"{stem}.png").mkdir()
    return path


def _wrong_channels(folder: Path, stem: str, out: Path) -> Path:
    np.save(path := folder / f"{stem}.npy", np.random.default_rng(2).random((30, 30, 5), dtype=np.float32))
    return path


def _too_large(folder: Path, stem: str, out: Path) -> Path:
    # 10^6 x 10^6 pixels (a 100-byte file): terabytes to segment, more than any machine here
    (path := folder / f"{stem}.png").write_bytes(png_bytes_with_size(1_000_000, 1_000_000))
    return path


def _unwritable_output(folder: Path, stem: str, out: Path) -> Path:
    path = folder / f"{stem}.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (40, 44), dtype=np.uint8)).save(path)
    (out / f"{stem}_mask.png").mkdir(parents=True)  # a folder where its mask must go
    return path


# kind -> (maker, words its error must contain)
KINDS: dict[str, tuple[Callable[[Path, str, Path], Path], str]] = {
    "not an image": (_not_an_image, "cannot read"),
    "truncated PNG": (_truncated_png, "truncated"),
    "empty file": (_empty, "the file is empty"),
    "unreadable": (_unreadable, "ermission denied"),
    "directory with an image suffix": (_directory, "is a directory"),
    "wrong channel count": (_wrong_channels, "C in 1..4 channels, got shape (30, 30, 5)"),
    # the CLI streams it as a slide when the image is too large to decode whole (wsi.is_slide) and the PNG
    # cannot be read in parts; Segmenter.segment_files refuses it by its memory need: both say how to tile it
    "too large for the memory": (_too_large, "tile by tile"),
    "unwritable output": (_unwritable_output, "IsADirectoryError"),
}


def write_good(folder: Path, stem: str, seed: int) -> Path:
    """A readable image (gray, odd size, smaller and larger than a 32 patch by seed)."""
    rng = np.random.default_rng(seed)
    shape = [(45, 70), (20, 33), (64, 41)][seed % 3]
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path := folder / f"{stem}.png")
    return path


def deny_reads(monkeypatch, paths: list[Path]) -> None:
    """Make opening `paths` raise PermissionError as the kernel does for a mode-000 file when the tests run
    as root (who may read anything); other users get the real refusal from chmod."""
    if not RUNNING_AS_ROOT:
        return
    denied = {str(p) for p in paths}
    real_open = builtins.open

    def guarded(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.fspath(file) in denied:
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)
    monkeypatch.setattr(io, "open", guarded)
