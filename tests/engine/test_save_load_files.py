"""Engine files that must not load, and must say why: truncated at any point, a byte flipped anywhere, a foreign
file (PNG, a torch.save checkpoint, a pickle, JSON, ONNX-like bytes), an older or newer format version, and
hostile files: a pickle whose unpickling would create a marker file, and well-formed files whose header asks
for code (a packed-weight class outside the kernels, a guard or symbol name that is Python code, an operator
that is not aten's, a tensor past its storage). Every one is an EngineFileError (a ValueError) naming what is
wrong, no marker file appears, and nothing is half-loaded. Plus the committed format-1 fixture, which every
later unet_fast must keep loading (tests/engine/data/, made by `python tests/engine/test_save_load_files.py
--make-fixture`).
"""

from __future__ import annotations

import json
import pickle
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import unet_fast
from unet_fast import UNet
from unet_fast.engine import engine_file
from unet_fast.engine.engine_file import EngineFileError, read_file, write_file
from unet_fast.models.weights import lively_weights

DATA = Path(__file__).resolve().parent / "data"
FIXTURE = DATA / "unet_tiny_format1.ufe"


def _small(tmp_path: Path, backend: str = "cpu") -> tuple[Path, unet_fast.FusedUNet]:
    m = lively_weights(UNet(3, 2, 4, 2, "batch", "transpose"), seed=5).eval()
    fast = unet_fast.optimize(m, torch.randn(2, 3, 20, 24), backend=backend)
    return unet_fast.save(fast, tmp_path / "m.ufe"), fast


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path, _ = _small(tmp_path_factory.mktemp("small"))
    return path.read_bytes()


def _refused(path: Path, *match: str) -> EngineFileError:
    with pytest.raises(EngineFileError) as e:
        unet_fast.load(path)
    for m in match:
        assert m in str(e.value), (m, str(e.value))
    assert isinstance(e.value, ValueError) and e.value.path == str(path)
    return e.value


def _regions(blob: bytes) -> dict[str, list[int]]:
    """Byte positions to flip, per region of the file."""
    _, _, _, hlen, doff, _dlen, _ = struct.unpack_from("<8sIIQQQ32s", blob, 0)
    header = json.loads(blob[72 : 72 + hlen])
    data = []
    for s in header["storages"]:
        if s["nbytes"]:
            o = doff + s["offset"]
            data += sorted({o, o + s["nbytes"] // 2, o + s["nbytes"] - 1})
    gaps = [doff + s["offset"] - 1 for s in header["storages"][1:] if s["offset"] % 64 == 0 and s["offset"]]
    return {"prefix": list(range(72)), "header": list(range(72, 72 + hlen, max(1, hlen // 60))),
            "padding": [72 + hlen, (72 + hlen + doff) // 2, doff - 1], "data": data[:: max(1, len(data) // 80)],
            "gaps": [g for g in gaps if g >= doff and not _owned(g - doff, header)][:20]}  # fmt: skip


def _owned(pos: int, header: dict) -> bool:
    return any(s["offset"] <= pos < s["offset"] + s["nbytes"] for s in header["storages"])


@pytest.mark.parametrize("region", ["prefix", "header", "padding", "data", "gaps"])
def test_a_flipped_byte_anywhere_is_refused(region: str, small: bytes, tmp_path: Path) -> None:
    positions = _regions(small)[region]
    assert positions, region
    path = tmp_path / "bad.ufe"
    for pos in positions:
        blob = bytearray(small)
        blob[pos] ^= 0x5A
        path.write_bytes(bytes(blob))
        try:
            unet_fast.load(path)
        except EngineFileError as e:
            assert e.problem, pos
            continue
        raise AssertionError(f"a flipped byte at {pos} ({region}) loaded")


def test_truncated_files_are_refused_at_every_point(small: bytes, tmp_path: Path) -> None:
    _, _, _, hlen, doff, dlen, _ = struct.unpack_from("<8sIIQQQ32s", small, 0)
    path = tmp_path / "cut.ufe"
    for n in sorted({1, 7, 8, 40, 71, 72, 72 + hlen // 2, 72 + hlen, doff, doff + dlen // 2, len(small) - 1}):
        path.write_bytes(small[:n])
        e = _refused(path)
        assert "truncated" in e.problem or "magic" in e.problem, (n, e.problem)
    path.write_bytes(b"")
    _refused(path, "truncated")
    path.write_bytes(small + b"\0\0\0")
    _refused(path, "unexpected bytes after the data")


def test_foreign_files_are_named(tmp_path: Path) -> None:
    png = Path(unet_fast.__file__).parent / "assets" / "demo_image.png"
    _refused(png, "PNG image")
    ckpt = tmp_path / "model.pt"
    torch.save(lively_weights(UNet(3, 2, 4, 2)).state_dict(), ckpt)
    _refused(ckpt, "zip archive", "torch.save", "unet_fast.save")
    pk = tmp_path / "obj.pkl"
    pk.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    _refused(pk, "pickle", "never read")
    js = tmp_path / "card.json"
    js.write_text(json.dumps({"in_channels": 3}))
    _refused(js, "JSON")
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"\x08\x08\x12\x07pytorch" + bytes(100))
    _refused(onnx, "ONNX")
    with pytest.raises(FileNotFoundError):
        unet_fast.load(tmp_path / "missing.ufe")


def test_bad_paths_and_devices_get_a_clear_error_and_change_nothing(small: bytes, tmp_path: Path) -> None:
    """A missing path, a folder, something that is not a path, a device this machine lacks (asked, or the one
    the file was saved for), a device string torch does not know: each a clear error, the file untouched."""
    path = tmp_path / "m.ufe"
    path.write_bytes(small)
    with pytest.raises(FileNotFoundError, match=r"missing\.ufe"):
        unet_fast.load(tmp_path / "missing.ufe")
    with pytest.raises(IsADirectoryError, match="is a folder, not an engine file"):
        unet_fast.load(tmp_path)
    with pytest.raises(TypeError, match="PathLike"):
        unet_fast.load(123)  # type: ignore[arg-type]
    with pytest.raises(IsADirectoryError, match="give save\\(\\) a file name"):
        unet_fast.save(unet_fast.load(path), tmp_path)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"device='cuda' was asked, and this machine has no CUDA device.*device='cpu'"):
            unet_fast.load(path, device="cuda")
        # a file saved on a GPU machine (its header says cuda:0; checksums valid): refused by default, named
        raw = read_file(path)
        header = json.loads(json.dumps(raw.header))
        header["engine"]["device"] = "cuda:0"
        gpu = tmp_path / "gpu.ufe"
        write_file(gpu, header, list(raw.storages))
        with pytest.raises(ValueError, match=r"gpu\.ufe was saved for cuda:0, and this machine has no CUDA device"):
            unet_fast.load(gpu)
        x = torch.randn(2, 3, 20, 24)
        torch.testing.assert_close(unet_fast.load(gpu, device="cpu")(x), unet_fast.load(path)(x), rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="nonsense"):
        unet_fast.load(path, device="nonsense")
    assert path.read_bytes() == small and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["m.ufe"] + ([] if torch.cuda.is_available() else ["gpu.ufe"]))  # no temporary files left


def _with_version(blob: bytes, version: int) -> bytes:
    b = bytearray(blob)
    struct.pack_into("<I", b, 8, version)
    return bytes(b)


def test_newer_and_older_format_versions_are_refused_with_the_fix(small: bytes, tmp_path: Path) -> None:
    path = tmp_path / "v.ufe"
    path.write_bytes(_with_version(small, engine_file.FORMAT_VERSION + 1))
    _refused(path, f"format version {engine_file.FORMAT_VERSION + 1} is newer", "upgrade unet_fast")
    # version 0: an unreleased draft, written here by hand (its layout was this prefix; there is no migration)
    path.write_bytes(_with_version(small, 0))
    _refused(path, "format version 0 is older", "unet_fast.save")


def test_the_committed_format_1_file_still_loads() -> None:
    """A file written by the first release of the format: later versions must keep reading it (or migrate)."""
    fast = unet_fast.load(FIXTURE)
    x = torch.from_numpy(np.load(DATA / "unet_tiny_format1_input.npy", allow_pickle=False))
    want = torch.from_numpy(np.load(DATA / "unet_tiny_format1_output.npy", allow_pickle=False))
    out = fast(x)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)
    assert fast.report_data().artifact.format_version == 1


def make_fixture() -> None:
    """Write tests/engine/data/unet_tiny_format1.ufe (+ its input and the model's output, as .npy)."""
    DATA.mkdir(exist_ok=True)
    m = lively_weights(UNet(3, 2, 4, 2, "batch", "transpose", head="softmax"), seed=1).eval()
    x = torch.randn(2, 3, 20, 24, generator=torch.Generator().manual_seed(2))
    fast = unet_fast.optimize(m, x, backend="torch")
    unet_fast.save(fast, FIXTURE)
    np.save(DATA / "unet_tiny_format1_input.npy", x.numpy(), allow_pickle=False)
    np.save(DATA / "unet_tiny_format1_output.npy", m(x).detach().numpy(), allow_pickle=False)


# ---------------------------------------------------------------------------------------------------
# Hostile files: a loader that never runs code from them
# ---------------------------------------------------------------------------------------------------


class _Touch:
    """Unpickling this creates the marker file (what a malicious pickle does, harmlessly)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple]:
        return (Path.touch, (self.marker,))


def test_a_pickle_payload_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Touch(marker))
    pickle.loads(payload)  # the payload works: unpickling it does create the marker
    assert marker.exists()
    marker.unlink()
    for name, blob in (("plain.ufe", payload), ("ckpt.ufe", None)):
        path = tmp_path / name
        if blob is None:
            torch.save({"weights": _Touch(marker)}, path)  # a checkpoint whose unpickling would run it
        else:
            path.write_bytes(blob)
        with pytest.raises(EngineFileError):
            unet_fast.load(path)
        assert not marker.exists(), f"loading {name} ran code from it"
    # inside a well-formed engine file: the bytes of a pickle in place of a tensor's data are only bytes
    folder = tmp_path / "x"
    folder.mkdir()
    path, _ = _small(folder, backend="torch")
    raw = read_file(path)
    storages = list(raw.storages)
    storages[0] = torch.frombuffer(bytearray(payload.ljust(storages[0].numel(), b"\0")[: storages[0].numel()]),
                                   dtype=torch.uint8)  # fmt: skip
    write_file(path, raw.header, storages)
    unet_fast.load(path)  # loads (weights are bytes; nothing interprets them), and runs nothing
    assert not marker.exists()


def _crafted(tmp_path: Path, edit: Any) -> Path:
    """A well-formed file (valid checksums) whose header `edit(header)` changed: what an attacker can write."""
    path, _ = _small(tmp_path, backend="cpu")
    raw = read_file(path)
    header = json.loads(json.dumps(raw.header))
    edit(header)
    out = tmp_path / "crafted.ufe"
    write_file(out, header, list(raw.storages))
    return out


def _first(header: dict, op: str) -> dict:
    return next(n for n in header["captures"][0]["graph"]["nodes"] if n["op"] == op)


HOSTILE = {
    "guard calling __import__": (lambda h: h["captures"][0]["guards"].append(
        "__import__('pathlib').Path('MARKER').touch() is None"), "is not one a capture makes"),
    "guard reaching __class__": (lambda h: h["captures"][0]["guards"].append(
        "L['x'].size().__class__.__name__ == 'x'"), "is not one a capture makes"),
    "guard with a lambda": (lambda h: h["captures"][0]["guards"].append("(lambda: 1)() == 1"),
                            "is not one a capture makes"),
    "guard with torch.load": (lambda h: h["captures"][0]["guards"].append("torch.load('MARKER') == 0"),
                              "the attribute .load is not allowed"),
    "symbol name that is code": (lambda h: h["captures"][0]["graph"]["nodes"][0].__setitem__(
        "shape", [{"$symbol": "__import__('os').getcwd()", "assumptions": {}}, 3, 20, 24]), "bad symbol name"),
    "symbols naming code": (lambda h: h["captures"][0].__setitem__("symbols", [[2, "os.system('x')"]]),
                            "symbols: malformed"),
    "size function outside the allowlist": (lambda h: h["captures"][0]["graph"]["nodes"][0].__setitem__(
        "shape", [{"$sym": "sympy.sympify", "args": []}, 3, 20, 24]), "is not allowed"),
    "packed weight of another class": (lambda h: h["weights"]["items"][0].__setitem__(
        "packed", {"$packed": "pathlib.Path", "fields": {"args": "MARKER"}}), "not allowed"),
    "packed weight class of a kernel module, not a dataclass": (lambda h: h["weights"]["items"][0].__setitem__(
        "packed", {"$packed": "unet_fast.kernels.cpu.F", "fields": {}}), "not a packed weight type"),
    "operator outside aten": (lambda h: _first(h, "conv").__setitem__("attrs", {
        **_first(h, "conv")["attrs"], "fn": {"$call": {"aten": "__getattribute__", "overload": "default"}}}),
        "bad operator name"),
    "unknown value tag": (lambda h: _first(h, "conv")["attrs"].__setitem__("stride", {"$pickle": "gASV"}),
                          "unknown value tag"),
    "unknown op": (lambda h: _first(h, "conv").__setitem__("op", "python"), "unknown op"),
    "a cycle in the graph": (lambda h: h["captures"][0]["graph"]["nodes"][1].__setitem__("inputs", [3]),
                             "inputs must name earlier nodes"),
    "tensor past its storage": (lambda h: _first(h, "conv")["attrs"]["weight"]["$t"].__setitem__(2, 10**9),
                                "reaches past its storage"),
    "packed weight of another shape": (lambda h: _swap_packed(h), "does not match its source"),
}


def _swap_packed(h: dict) -> None:
    items = [i for i in h["weights"]["items"] if i["role"].startswith("cpu.conv2d")]
    a, b = items[0], next(i for i in items if i["source"]["$t"][3] != items[0]["source"]["$t"][3])
    a["packed"], b["packed"] = b["packed"], a["packed"]


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_crafted_header_is_refused_and_runs_nothing(case: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    edit, match = HOSTILE[case]

    def with_marker(h: dict) -> None:
        edit(h)
        text = json.dumps(h).replace("MARKER", repr(str(marker))[1:-1])
        h.clear()
        h.update(json.loads(text))

    path = _crafted(tmp_path, with_marker)
    e = _refused(path)
    assert match in str(e), (case, str(e))
    assert not marker.exists()


def test_every_allowed_guard_of_the_families_passes_the_check() -> None:
    """The guard check accepts what torch prints (2.13 and 2.14 vocabularies), so real files load."""
    from unet_fast.engine.codec import check_guard

    for g in ["(L['x'].size()[3] // 2) != 1", "(max(1, L['x'].size()[3] // 2)*max(1, L['x'].size()[2] // 2)) != 1",
              "(L['x'].size()[3] // 4) >= 1 and (L['x'].size()[2] // 4) >= 1", "((-2) + L['x'].size()[3]) != 1",
              "torch.sym_max(1, L['x'].size()[2] // 2) > 1", "math.floor(L['x'].size()[2] / 2) == 3",
              "(1 + (((-1) + L['x'].size()[3]) // 2)) != 1", "L['x'].size()[2] % 16 == 0"]:  # fmt: skip
        check_guard(g)


if __name__ == "__main__" and "--make-fixture" in sys.argv:
    make_fixture()
    print(f"wrote {FIXTURE}")
