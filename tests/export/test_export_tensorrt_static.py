"""Static check of unet_fast/export/tensorrt.py against TensorRT's published type stubs, so API slips
(a misspelt enum, a missing argument, a method TensorRT 10 does not have) are caught on machines where
TensorRT cannot be installed.

The stubs: PyPI `tensorrt-stubs` 10.13.0.35.1 (MIT, github.com/sync-dev-org/tensorrt-stubs), generated
from the TensorRT 10.13 bindings. The wheel is vendored in tests/export/data/ (not installed: it would
put a stub-only `tensorrt` namespace package on the path, which looks like an installed TensorRT).
It has a few generated-code defects that stop mypy from parsing it (a parameter named `in`, a
non-default parameter after a default); they are in plugin classes we do not use and are repaired
textually below. Errors inside the stubs themselves are ignored; only our module's are reported.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("mypy", reason="mypy is not installed (it is in the 'test' extra)")

ROOT = Path(__file__).resolve().parents[2]
WHEEL = Path(__file__).with_name("data") / "tensorrt_stubs-10.13.0.35.1-py3-none-any.whl"
WHEEL_SHA256 = "749a36a1f825db0800a82d0dabbf7ef49f3a9edc1e794c9545fb94a551613fea"
MODULE = ROOT / "unet_fast" / "export" / "tensorrt.py"

MYPY_INI = """
[mypy]
python_version = 3.11
ignore_missing_imports = True
follow_imports = silent
check_untyped_defs = True
[mypy-torch.*]
follow_imports = skip
[mypy-unet_fast.*]
follow_imports = skip
[mypy-tensorrt]
ignore_errors = True
[mypy-tensorrt.*]
ignore_errors = True
[mypy-tensorrt_bindings.*]
ignore_errors = True
"""

# Deliberate slips, each of a kind the check must catch: (original, slipped, what mypy must say).
SLIPS = [
    ("MemoryPoolType.WORKSPACE,", "MemoryPoolType.WORKSPACES,", 'has no attribute "WORKSPACES"'),
    ("config.set_timing_cache(cache, False)", "config.set_timing_cache(cache)", 'Missing positional argument "ignore_mismatch"'),
    ("execute_async_v3(torch", "execute_async_v2(torch", 'has no attribute "execute_async_v2"'),
    ("engine.get_tensor_profile_shape(self.input_name, 0)", "engine.get_tensor_profile_shape(self.input_name)",
     "Missing positional argument"),
]  # fmt: skip


def _extract_stubs(dest: Path) -> None:
    assert hashlib.sha256(WHEEL.read_bytes()).hexdigest() == WHEEL_SHA256, "vendored stub wheel changed"
    with zipfile.ZipFile(WHEEL) as z:
        for name in z.namelist():
            if name.endswith(".pyi"):
                z.extract(name, dest)
    stub = dest / "tensorrt_bindings" / "tensorrt.pyi"
    text, n = re.subn(r"([(,] ?)in: ", r"\1in_: ", stub.read_text())
    text = text.replace(
        "power: Weights = None, channel_axis: int)", "power: Weights = None, channel_axis: int = ...)"
    )
    assert n == 4, f"the stub repairs no longer match the vendored stubs ({n} 'in' parameters)"
    stub.write_text(text)


def test_tensorrt_module_type_checks_against_tensorrt_10_stubs(tmp_path) -> None:
    stubs = tmp_path / "stubs"
    _extract_stubs(stubs)
    (tmp_path / "mypy.ini").write_text(MYPY_INI)
    source = MODULE.read_text()
    slipped = source
    for original, slip, _ in SLIPS:
        assert original in slipped, f"the negative control's anchor {original!r} is gone from tensorrt.py"
        slipped = slipped.replace(original, slip)
    (tmp_path / "neg").mkdir()
    (tmp_path / "neg" / "tensorrt_slipped.py").write_text(slipped)
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(tmp_path / "mypy.ini"), "--cache-dir",
         str(tmp_path / "cache"), "--no-error-summary", str(MODULE), str(tmp_path / "neg" / "tensorrt_slipped.py")],
        capture_output=True, text=True, cwd=ROOT, env={"MYPYPATH": str(stubs), "PATH": "/usr/bin:/bin"}, timeout=300,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    ours = [
        line
        for line in out.splitlines()
        if line.startswith(str(MODULE.relative_to(ROOT))) or "tensorrt.py:" in line
    ]
    assert not ours, (
        "unet_fast/export/tensorrt.py does not type-check against the TensorRT stubs:\n" + "\n".join(ours)
    )
    neg = [line for line in out.splitlines() if "tensorrt_slipped.py" in line and ": error:" in line]
    for _, _, message in SLIPS:
        assert any(message in line for line in neg), f"the static check missed a slip ({message}):\n{out}"
