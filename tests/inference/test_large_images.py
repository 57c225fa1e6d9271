"""Images too large for the readers or the memory (issue 23, item 9): a header claiming more than the
machine holds is refused from the header, before anything is allocated, with the memory it needs and the
memory there is; Pillow's fixed decompression-bomb limit no longer refuses images the machine can hold;
`segment` turns every refusal into a per-file error (exit 3, no traceback, the other files done); the
memory model bounds the measured peak."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from bad_inputs import png_bytes_with_size
from PIL import Image

from unet_fast import UNet
from unet_fast.cli import main
from unet_fast.inference import memory
from unet_fast.inference.batch import segment_file
from unet_fast.inference.image_io import ImageTooLargeError, read_header, read_image
from unet_fast.inference.model_card import ModelCard
from unet_fast.inference.segmenter import Segmenter

BIG = 1_000_000  # 10^6 x 10^6 pixels: terabytes, on any machine


def _jpeg_claiming(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.find(b"\xff\xc0")  # baseline frame header: precision, height, width
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def _bmp_claiming(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, "BMP")
    data = bytearray(buf.getvalue())
    data[18:26] = width.to_bytes(4, "little") + height.to_bytes(4, "little")
    return bytes(data)


def _tiff_claiming(width: int, height: int) -> bytes:
    """A minimal little-endian TIFF whose one strip holds 16 bytes of a width x height 8-bit image."""
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 8 + 2 + 12 * 9 + 4),
               (277, 3, 1), (278, 4, height), (279, 4, 16)]  # fmt: skip
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", tag, kind, 1, value) if kind == 4 else struct.pack("<HHIHH", tag, kind, 1, value, 0)
        for tag, kind, value in entries
    )
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + b"\x00" * 16


def _npy_claiming(shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buf.getvalue() + b"\x00" * 64


CLAIMS = {  # file name -> (bytes, words of the refusal)
    "p8.png": (png_bytes_with_size(BIG, BIG), "1000000x1000000"),
    "p16.png": (png_bytes_with_size(BIG, BIG, bit_depth=16, colour_type=2), "3 channel(s)) needs"),  # pypng path
    "j.jpg": (_jpeg_claiming(65000, 65000), "65000x65000"),
    "b.bmp": (_bmp_claiming(BIG, BIG), "1000000x1000000"),
    "t.tif": (_tiff_claiming(BIG, BIG), "1000000x1000000"),
    "n.npy": (_npy_claiming((BIG, BIG)), "the file holds 192 (truncated)"),
}


# What `segment` says of each: PNG / JPEG / BMP too large to decode whole go to the whole-slide path
# (wsi.is_slide), which refuses formats that cannot be read in parts and names those that stream; the TIFF
# (whose tiles could stream) is refused by the memory check, which names them too.
CLI_WORDS = {"p8.png": "1000000 x 1000000", "p16.png": "1000000 x 1000000", "j.jpg": "65000 x 65000",
             "b.bmp": "1000000 x 1000000", "t.tif": "1000000x1000000", "n.npy": "the file holds 192 (truncated)"}  # fmt: skip


def _peak_growth(fn) -> int:
    """Bytes the process's peak resident memory grew above its current size while `fn` ran (Linux)."""

    def status():
        d = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
        return int(d["VmRSS"].split()[0]) * 1024, int(d["VmHWM"].split()[0]) * 1024

    before, _ = status()
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak to the current size
    fn()
    return status()[1] - before


def _can_measure_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@pytest.mark.parametrize("name", list(CLAIMS))
def test_a_header_claiming_more_than_the_machine_holds_is_refused_before_allocation(name, tmp_path) -> None:
    data, words = CLAIMS[name]
    (path := tmp_path / name).write_bytes(data)
    bomb_limit = Image.MAX_IMAGE_PIXELS
    expected = ValueError if name.endswith(".npy") else ImageTooLargeError
    errors = []

    def read():
        with pytest.raises(expected) as e:
            read_image(path)
        errors.append(str(e.value))

    growth = _peak_growth(read) if _can_measure_peak() else 0
    assert words in errors[0] and name in errors[0], errors[0]
    if expected is ImageTooLargeError:
        assert "needs" in errors[0] and "GiB available" in errors[0] and "tile it first" in errors[0]
    assert growth < 64 << 20, f"{growth / 2**20:.0f} MiB allocated before refusing"  # refused from the header
    assert Image.MAX_IMAGE_PIXELS == bomb_limit  # Pillow's setting is the user's again


def test_segment_names_each_refused_image_and_does_the_others(tmp_path, capsys) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name, (data, _) in CLAIMS.items():
        (folder / name).write_bytes(data)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 60), dtype=np.uint8)).save(folder / "ok.png")
    torch.set_num_threads(1)
    code = main(["segment", str(folder), "--out", str(tmp_path / "out"), "--backend", "reference", "--quiet"])
    err = capsys.readouterr().err
    assert code == 3 and "Traceback" not in err
    for name, words in CLI_WORDS.items():
        assert any(line.startswith(f"unet-fast segment: failed: {folder / name}:") and words in line
                   and ("tile by tile" in line or name.endswith(".npy"))
                   for line in err.splitlines()), err  # fmt: skip
    assert (tmp_path / "out" / "ok_mask.png").is_file()


FORMATS = {".png": "PNG", ".jpg": "JPEG", ".bmp": "BMP", ".webp": "WEBP", ".tif": "TIFF"}


@pytest.mark.parametrize("suffix", [*FORMATS, "16-bit.png", "lzw.tif"])
def test_pillows_fixed_bomb_limit_no_longer_refuses_what_fits(suffix, tmp_path, monkeypatch) -> None:
    """With Pillow's limit at 1000 pixels, a 120 x 90 image (10800 > 2 x 1000: Pillow alone raises
    DecompressionBombError) reads: the limit that counts is the memory's. Pillow's setting is restored."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    a = np.random.default_rng(1).integers(0, 256, (90, 120), dtype=np.uint8)
    path = tmp_path / f"x.{suffix.rsplit('.', 1)[-1]}"
    if suffix == "16-bit.png":
        Image.fromarray(a.astype(np.uint16) * 257).save(path)
    elif suffix == "lzw.tif":
        Image.fromarray(a).save(path, compression="tiff_lzw")
    else:
        Image.fromarray(a).save(path, FORMATS[suffix], **({"lossless": True} if suffix == ".webp" else {}))
    with pytest.raises(Image.DecompressionBombError), Image.open(path) as im:
        im.load()
    got = read_image(path)
    assert got.shape[:2] == (90, 120)
    if suffix != ".jpg":
        np.testing.assert_array_equal(got[:, :, 0], a / np.float32(255))
    assert Image.MAX_IMAGE_PIXELS == 1000


def test_concurrent_reads_share_the_raised_limit_and_restore_it(tmp_path, monkeypatch) -> None:
    """The server decodes in threads: each read raises Pillow's limit to its image while it runs; the
    user's limit comes back only after the last one."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    paths = []
    for i in range(8):
        Image.fromarray(np.full((50 + i, 70), i, np.uint8)).save(p := tmp_path / f"{i}.png")
        paths.append(p)
    results, errors = {}, []

    def read(p):
        try:
            for _ in range(5):
                results[p.name] = read_image(p).shape
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=read, args=(p,)) for p in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 8 and Image.MAX_IMAGE_PIXELS == 1000


def _tiny_segmenter(**kwargs) -> Segmenter:
    cfg = dict(in_channels=1, num_classes=3, base_channels=2, depth=1, head="softmax")
    card = ModelCard(config=cfg, mean=[0.5], std=[0.25], class_names=["a", "b", "c"], patch_size=64)
    return Segmenter(UNet(**cfg).eval(), card, backend="reference", **kwargs)


def test_the_memory_limit_is_the_segmentations_need_and_says_both_figures(tmp_path, monkeypatch) -> None:
    """A real 4000 x 3000 file refused under a 64 MiB budget (max_memory, or what the machine has:
    memory.available_bytes), with what it needs; accepted with room to spare."""
    np.lib.format.open_memmap(tmp_path / "wide.npy", mode="w+", dtype=np.uint8, shape=(3000, 4000)).flush()
    header = read_header(tmp_path / "wide.npy")
    need = _tiny_segmenter().need_bytes(header, True)
    assert 3000 * 4000 * 30 < need < 3000 * 4000 * 200  # image, input, output, the whole-image call, mask
    seg = _tiny_segmenter(max_memory=64 << 20)
    result = segment_file(seg, tmp_path / "wide.npy", "wide", tmp_path)
    assert result.error == (f"ImageTooLargeError: wide.npy: 4000x3000 (12.0 Mpx, 1 channel(s)) needs "
                            f"{memory.format_bytes(need)} to segment, 64 MiB available; {memory._WHOLE_SLIDE_HINT}")  # fmt: skip
    monkeypatch.setattr(memory, "available_bytes", lambda: 64 << 20)
    assert "64 MiB available" in segment_file(_tiny_segmenter(), tmp_path / "wide.npy", "w", tmp_path).error
    monkeypatch.setattr(memory, "available_bytes", lambda: need)  # exactly enough
    _tiny_segmenter().check_fits(header, overlay=True)  # fits: no error
    with pytest.raises(ImageTooLargeError, match="to segment"):
        _tiny_segmenter(max_memory=need - 1).check_fits(header, overlay=True)


def test_available_memory_is_read_from_the_kernel_and_the_cgroup() -> None:
    avail = memory.available_bytes()
    if not Path("/proc/meminfo").is_file():
        pytest.skip("no /proc/meminfo here")
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert avail is not None and 0 < avail <= total


CASES = [("gray", 2000, 3000, 5), ("rgb", 2400, 1600, 1), ("gray", 400, 9000, 3)]  # wide: row chunks


@pytest.mark.slow
@pytest.mark.skipif(not _can_measure_peak(), reason="needs Linux's /proc/self/clear_refs to measure a peak")
@pytest.mark.skipif(not hasattr(__import__("ctypes").CDLL(None), "malloc_trim"), reason="needs glibc's malloc_trim")
def test_the_memory_model_bounds_the_measured_peak(tmp_path) -> None:
    """segment_file (with the overlay) on real images in a fresh process: the peak resident memory each
    adds stays under the modelled need (`memory.segmentation_bytes`) and not far below it (the model is
    what the check refuses on: a loose model would refuse images that fit)."""
    code = f"""
import numpy as np, torch
from pathlib import Path
from PIL import Image
from unet_fast import UNet
from unet_fast.inference.model_card import ModelCard
from unet_fast.inference.segmenter import Segmenter
from unet_fast.inference.batch import segment_file
from unet_fast.inference.image_io import read_header
import ctypes
torch.set_num_threads(1)
libc = ctypes.CDLL(None)
d = Path({str(tmp_path)!r})
def status():
    s = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(s["VmRSS"].split()[0]) * 1024, int(s["VmHWM"].split()[0]) * 1024
for kind, h, w, k in {CASES!r}:
    c = 3 if kind == "rgb" else 1
    cfg = dict(in_channels=c, num_classes=k, base_channels=2, depth=1, head="softmax" if k > 1 else "sigmoid")
    card = ModelCard(config=cfg, mean=[0.5] * c, std=[0.25] * c, class_names=[str(i) for i in range(k)],
                     patch_size=256)
    seg = Segmenter(UNet(**cfg).eval(), card, backend="reference", batch_size=2, overlap=0.0)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (h, w, c) if c == 3 else (h, w), dtype=np.uint8)).save(d / "x.png")
    Image.fromarray(np.zeros((300, 300), np.uint8)).save(d / "s.png")
    segment_file(seg, d / "s.png", "s", d)  # lazy initialisations out of the way
    libc.malloc_trim(0)  # give the last case's freed heap back: its reuse would hide this case's peak
    before, _ = status()
    Path("/proc/self/clear_refs").write_text("5")
    assert segment_file(seg, d / "x.png", "x", d).ok
    print(status()[1] - before, seg.need_bytes(read_header(d / "x.png"), True))
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    for case, line in zip(CASES, out.stdout.split("\n"), strict=False):
        measured, modelled = map(int, line.split())
        assert measured <= modelled <= 2 * measured, (case, measured / 2**20, modelled / 2**20)


def test_a_tiff_too_large_for_its_file_is_not_decoded(tmp_path) -> None:
    """tifffile's own reading would allocate the claimed size first: the header check refuses it."""
    (tmp_path / "t.tif").write_bytes(_tiff_claiming(BIG, BIG))
    with tifffile.TiffFile(tmp_path / "t.tif") as tif:
        assert tif.series[0].shape == (BIG, BIG)  # what tifffile would try to allocate
    with pytest.raises(ImageTooLargeError, match=r"needs 9313\.2 GiB to decode"):
        read_image(tmp_path / "t.tif")
