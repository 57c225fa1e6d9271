"""The Winograd CPU peers of issue 25 as bench contenders: MNN (peers_mnn) and ncnn (peers_ncnn).

Each is converted from our ONNX export and run at fp32; these tests check, on a small conv net with lively
weights, odd sizes and batch 2: parity with PyTorch fp32, the fp32 settings named in the note, clear skips,
that MNN's conversion never runs the `mnnconvert` console script nor imports its telemetry module
(MNN.tools.utils.log, which pip-installs a logging SDK and sends a usage log), and that pnnx is run with fp16
weights off and writes only into the run's workdir. They skip (with the install command) where an engine
is not installed. No timing is asserted."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from unet_fast.bench import contenders as C
from unet_fast.bench.contenders import Settings
from unet_fast.bench.results import RATIO_PEERS
from unet_fast.bench.runner import RunConfig, run_workload
from unet_fast.bench.workloads import lively_weights

HAS_MNN = importlib.util.find_spec("MNN") is not None and importlib.util.find_spec("_tools") is not None
HAS_NCNN = importlib.util.find_spec("ncnn") is not None and importlib.util.find_spec("pnnx") is not None
needs_mnn = pytest.mark.skipif(not HAS_MNN, reason='MNN is not installed (pip install -e ".[peers]")')
needs_ncnn = pytest.mark.skipif(not HAS_NCNN, reason='ncnn/pnnx are not installed (pip install -e ".[peers]")')
PEERS = ("mnn", "mnn-normal", "ncnn")


class SmallNet(nn.Module):
    """conv-BN-ReLU x2, max-pool, transposed conv up, concat, conv, 1x1 head: the U-Net's op kinds."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                               nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())  # fmt: skip
        self.down = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.b = nn.Sequential(nn.Conv2d(32, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.a(x)
        return self.b(torch.cat([a, self.up(self.down(a))], 1))


def small_case(batch: int = 2, hw: tuple[int, int] = (22, 30)) -> tuple[nn.Module, torch.Tensor, np.ndarray]:
    torch.manual_seed(0)
    model = lively_weights(SmallNet(), seed=1)
    x = torch.randn(batch, 3, *hw)
    with torch.no_grad():
        ref = model(x).numpy()
    return model, x, ref


def rel_l2(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(got.astype(np.float64) - ref) / np.linalg.norm(ref))


def test_registered_as_fp32_peers() -> None:
    for name in PEERS:
        c = C.CONTENDERS[name]
        assert c.family == "peer" and name in RATIO_PEERS
        assert c.in_default(torch.float32) and not c.in_default(torch.bfloat16)


@pytest.mark.parametrize("name", PEERS)
def test_check_reasons(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = C.CONTENDERS[name]
    why = c.check(Settings("cpu", torch.float32, 1, tmp_path))
    if why:  # not installed here: the reason says so, with the install command
        assert "not installed" in why and ".[peers]" in why, why
        return
    assert "float32 only" in c.check(Settings("cpu", torch.bfloat16, 1, tmp_path))
    assert "CPU only" in c.check(Settings("cuda", torch.float32, 1, tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda m, *a: None if m in ("MNN", "ncnn") else real(m, *a))
    why = c.check(Settings("cpu", torch.float32, 1, tmp_path))
    assert "not installed" in why and '.[peers]' in why


@needs_mnn
@pytest.mark.parametrize("name", ["mnn", "mnn-normal"])
def test_mnn_parity_and_note(name: str, tmp_path: Path) -> None:
    model, x, ref = small_case()
    p = C.CONTENDERS[name].prepare(model, x, Settings("cpu", torch.float32, 2, tmp_path))
    first, second = np.asarray(p.run()), np.asarray(p.run())
    assert first.shape == ref.shape and np.isfinite(first).all()
    assert rel_l2(first, ref) < 1e-3 and np.array_equal(first, second)  # the row's own copy, not a view
    precision = "high" if name == "mnn" else "normal"
    assert f"Session API, precision={precision}" in p.note and "2 threads" in p.note
    assert "_tools.mnnconvert" in p.note and p.precision == "fp32"


_GUARD = textwrap.dedent("""
    import os, socket, subprocess, sys
    from pathlib import Path

    def refuse(*a, **k):
        raise AssertionError(f"process or network access during conversion: {a[:2]}")

    for mod, names in ((os, ("system", "fork", "forkpty", "posix_spawn", "posix_spawnp", "execv", "execve",
                             "execvp", "execvpe", "popen", "spawnv", "spawnve")),
                       (subprocess, ("Popen", "run", "call", "check_call", "check_output"))):
        for n in names:
            if hasattr(mod, n):
                setattr(mod, n, refuse)
    socket.socket.connect = refuse
    socket.create_connection = refuse
    from unet_fast.bench.peers_mnn import convert
    onnx_path, out = Path(sys.argv[1]), Path(sys.argv[2])
    before = set(sys.modules)  # torch may have imported urllib.request itself: only what convert adds counts
    convert(onnx_path, out)
    bad = sorted(m for m in set(sys.modules) - before if m.startswith(("MNN.tools", "aliyun", "urllib")))
    assert not bad, f"the conversion imported {bad}"
    assert not any(m.startswith(("MNN.tools", "aliyun")) for m in sys.modules)
    print("converted", out.stat().st_size)
""")


@needs_mnn
def test_mnn_conversion_runs_no_console_script_and_no_telemetry(tmp_path: Path) -> None:
    """The conversion runs in-process: in a fresh interpreter where every way to start a process or open a
    connection raises, it converts, and MNN.tools (whose log module pip-installs a logging SDK and sends
    telemetry) is never imported. Where strace works, the process also makes no exec and no connect at the
    C level (the converter is C++)."""
    model, x, _ = small_case(1)
    onnx_path, _how = C.onnx_file(model, x, Settings("cpu", torch.float32, 1, tmp_path))
    script = tmp_path / "guard.py"
    script.write_text(_GUARD)
    out = tmp_path / "guarded.mnn"
    cmd = [sys.executable, str(script), str(onnx_path), str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0 and "converted" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed: the C-level exec/connect check did not run (the Python one did)")
    trace = tmp_path / "trace.txt"
    out.unlink()
    r = subprocess.run([strace, "-f", "-qq", "-e", "trace=execve,connect", "-o", str(trace), *cmd],
                       capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    if r.returncode != 0 and not out.exists():
        pytest.skip(f"strace cannot trace here (ptrace refused?): {r.stderr[-300:]}")
    calls = [ln for ln in trace.read_text().splitlines() if "execve(" in ln or "connect(" in ln]
    assert len(calls) == 1 and "execve(" in calls[0] and sys.executable.split("/")[-1] in calls[0], calls


def test_no_mnnconvert_console_script_anywhere() -> None:
    """Nothing in the package, the benchmarks, CI or the docs imports MNN.tools or runs the `mnnconvert`
    console script (its module pip-installs a logging SDK and sends telemetry): the converter is called as
    `_tools.mnnconvert` in-process."""
    root = Path(__file__).resolve().parents[2]
    files = [*root.glob("unet_fast/**/*.py"), *root.glob("benchmarks/**/*"), *root.glob("docs/*.md"),
             *root.glob(".ci/*"), root / "README.md"]  # fmt: skip
    command = re.compile(r"^\s*(\$\s*)?(mnnconvert|MNNConvert)\b", re.MULTILINE)
    for f in (f for f in files if f.is_file() and f.suffix in ("", ".py", ".sh", ".md")):
        text = f.read_text(errors="replace")
        for bad in ("import MNN.tools", "from MNN.tools", "from MNN import tools", "which mnnconvert"):
            assert bad not in text, f"{f.relative_to(root)} has {bad!r}"
        assert not command.search(text), f"{f.relative_to(root)} runs mnnconvert: {command.search(text)}"


@needs_ncnn
def test_ncnn_parity_note_and_workdir(tmp_path: Path) -> None:
    model, x, ref = small_case()
    p = C.CONTENDERS["ncnn"].prepare(model, x, Settings("cpu", torch.float32, 2, tmp_path))
    got = np.asarray(p.run())
    assert got.shape == ref.shape and rel_l2(got, ref) < 1e-5, rel_l2(got, ref)
    assert "pnnx fp16=0" in p.note and "fp16/bf16/int8 off" in p.note and "2 threads" in p.note
    assert "one extraction per image" in p.note and p.precision == "fp32"
    # pnnx's intermediates are gone; everything it wrote is inside the workdir
    kept = sorted(f.name for f in (tmp_path / "ncnn").iterdir())
    assert kept == ["model.ncnn.bin", "model.ncnn.param"], kept
    assert not list(Path.cwd().glob("*.pnnx*")) and not list(Path.cwd().glob("*_ncnn.py"))


@needs_ncnn
def test_ncnn_weights_are_fp32_and_options_fp32(tmp_path: Path) -> None:
    from unet_fast.bench import peers_ncnn

    model, x, _ = small_case(1)
    cmd = peers_ncnn.convert_command(Path("m.onnx"), (1, 3, 22, 30), tmp_path / "m")
    assert "fp16=0" in cmd and "inputshape=[1,3,22,30]f32" in cmd
    outputs = [a.split("=", 1) for a in cmd if a.startswith(("ncnn", "pnnx"))]
    assert len(outputs) == 7 and all(v.startswith(str(tmp_path)) for _, v in outputs), outputs
    onnx_path, _how = C.onnx_file(model, x, Settings("cpu", torch.float32, 1, tmp_path))
    param, binary = peers_ncnn.convert(onnx_path, tuple(x.shape), tmp_path)
    n_weights = sum(p.numel() for p in model.parameters() if p.dim() > 1)
    assert binary.stat().st_size >= 4 * n_weights  # fp16 storage would be about half
    assert peers_ncnn.io_names(param) == ("in0", "out0")
    opt = peers_ncnn.options(2)
    assert opt.num_threads == 2 and opt.use_winograd_convolution and opt.use_sgemm_convolution
    assert not any(getattr(opt, n) for n in peers_ncnn.FP32_OFF)


def test_ncnn_io_names_refuses_multi_output(tmp_path: Path) -> None:
    from unet_fast.bench import peers_ncnn

    param = tmp_path / "two.param"
    param.write_text("7767517\n3 3\nInput in 0 1 a\nReLU r1 1 1 a b\nReLU r2 1 1 a c\n")
    with pytest.raises(ValueError, match="one input and one output"):
        peers_ncnn.io_names(param)


@pytest.mark.skipif(not (HAS_MNN and HAS_NCNN), reason='MNN/ncnn are not installed (pip install -e ".[peers]")')
def test_runner_rows_with_parity_and_versions(tmp_path: Path) -> None:
    from unet_fast.bench.machine import machine_record

    r = run_workload(RunConfig("unet-small", size=(32, 48), threads=1, repeats=1, warmup=0,
                               contenders=["mnn", "ncnn"]), lambda _: None)  # fmt: skip
    assert not r.failed, r.failed
    rows = {row["contender"]: row for row in r.rows}
    assert set(rows) == {"mnn", "ncnn"} and all(row["parity_ok"] for row in rows.values())
    versions = machine_record()["versions"]
    assert versions["MNN"] and versions["ncnn"] and versions["pnnx"]
    json.dumps(r.as_dict())  # the rows serialise as they are


def test_cli_group_winograd_peers() -> None:
    """`--contenders winograd-peers` names MNN (both precisions) and ncnn as a group (not one by one, so an
    engine that is not installed skips instead of failing the run with exit 4)."""
    from unet_fast.commands.bench import WINOGRAD_PEERS, contender_names

    names, named = contender_names(["winograd-peers", "unet_fast-cpu"], None, quick=False)
    assert names == [*WINOGRAD_PEERS, "unet_fast-cpu"] and named == {"unet_fast-cpu"}
    assert set(WINOGRAD_PEERS) <= set(C.CONTENDERS)
