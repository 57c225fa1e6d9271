"""benchmarks/winograd_floor.py (issue 25's floor): its model counts the multiply-adds the plan's algorithms do,
and its phase-skipping patch still applies to the kernel it measures (a patch that no longer applies would
leave docs/peers.md's GEMM-only figures unreproducible without anyone noticing)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from winograd_floor import floor_ms  # noqa: E402

from unet_fast.kernels.cpu_winograd import available_isas  # noqa: E402


@pytest.mark.skipif(
    not available_isas(), reason="the model follows the engine's Winograd rule: needs unet_fast._C"
)
def test_floor_counts_each_layer_once() -> None:
    # unet64-256 by hand: 3x3 convs at (H, Cin, Cout), tiles of 6 from 64 px up (F(6x6): 8x8 points), of 4
    # below (F(4x4): 6x6 points); transposed 2x2 convs as 4 Cout-wide GEMMs per input pixel; the stem direct.
    convs = [(256, 64, 64), (128, 64, 128), (128, 128, 128), (64, 128, 256), (64, 256, 256), (32, 256, 512),
             (32, 512, 512), (16, 512, 1024), (16, 1024, 1024), (32, 1024, 512), (32, 512, 512), (64, 512, 256),
             (64, 256, 256), (128, 256, 128), (128, 128, 128), (256, 128, 64), (256, 64, 64)]  # fmt: skip
    wino = sum(((-(-h // 6)) ** 2 * 64 if h >= 64 else (h // 4) ** 2 * 36) * ci * co for h, ci, co in convs)
    transposed = (
        16**2 * 1024 * 4 * 512 + 32**2 * 512 * 4 * 256 + 64**2 * 256 * 4 * 128 + 128**2 * 128 * 4 * 64
    )
    stem = 256**2 * 9 * 3 * 64
    f = floor_ms(256, peak_gflops=117.0)
    ms = 2 / 117e9 * 1e3  # per multiply-add
    assert f["winograd_gemm"] == pytest.approx(wino * ms)
    assert f["transposed_gemm"] == pytest.approx(transposed * ms)
    assert f["stem"] == pytest.approx(stem * ms)
    assert f["total"] == pytest.approx(f["winograd_gemm"] + f["transposed_gemm"] + f["stem"])


@pytest.mark.skipif(
    shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout"
)
def test_skip_phases_patch_applies() -> None:
    r = subprocess.run(["git", "apply", "--check", "benchmarks/kernels/winograd_skip_phases.patch"], cwd=ROOT,
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
