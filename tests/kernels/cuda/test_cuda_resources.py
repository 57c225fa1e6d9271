"""Static checks of the CUDA kernels, no GPU needed: ptxas resource usage of the current build (zero
spills, no stack, registers and static shared memory within limits, for every kernel and arch), the
generated table docs/cuda_resources.md, and the SASS of the conv kernels (tensor-core HMMA for fp16/bf16,
cp.async LDGSTS in the tensor-core main loop, plain FFMA for fp32) for sm_80 and sm_90."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import resource_table as rt

ROOT = rt.ROOT


def _built_rows() -> list[rt.KernelUsage]:
    """Rows of the usage file setup.py writes whenever it compiles the .cu files (absent without nvcc)."""
    if not rt.USAGE_FILE.exists() or not rt.USAGE_FILE.read_text().strip():
        pytest.skip(f"no {rt.USAGE_FILE.name}: the CUDA module was not built here (no nvcc)")
    rows = rt.parse(rt.USAGE_FILE.read_text())
    assert rows, f"no ptxas resource usage parsed from {rt.USAGE_FILE}"
    return rows


def test_parse_resource_usage_format() -> None:
    text = """## csrc/cuda/x.cu
ptxas info    : Compiling entry function '_Z1kv' for 'sm_80'
ptxas info    : Function properties for _Z1kv
    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 37888 bytes smem, 856 bytes cmem[0]
ptxas info    : Compiling entry function '_Z1kv' for 'sm_90'
ptxas info    : Function properties for _Z1kv
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 32 registers, used 0 barriers
"""
    rows = rt.parse(text)
    assert rows == [rt.KernelUsage("csrc/cuda/x.cu", "_Z1kv", "sm_80", 40, 37888, 8, 4, 4),
                    rt.KernelUsage("csrc/cuda/x.cu", "_Z1kv", "sm_90", 32, 0, 0, 0, 0)]  # fmt: skip
    table = rt.table_kernels(rt.render(rows))
    assert {(src, arch) for src, _, arch in table} == {("x.cu", "sm_80"), ("x.cu", "sm_90")}


def test_every_kernel_within_limits_on_every_arch() -> None:
    rows = _built_rows()
    archs = {r.arch for r in rows}
    assert len(archs) >= 2, f"expected sm_80 and sm_90 (UNET_FAST_CUDA_ARCHS), got {archs}"
    bad = [r for r in rows if r.spill_stores or r.spill_loads or r.stack or r.registers > rt.MAX_REGISTERS
           or r.smem > rt.STATIC_SMEM_LIMIT]  # fmt: skip
    assert not bad, "kernels over their limits:\n" + "\n".join(map(str, bad))
    by_kernel: dict[str, set[str]] = {}
    for r in rows:
        by_kernel.setdefault(r.kernel, set()).add(r.arch)
    missing = {k: archs - a for k, a in by_kernel.items() if archs - a}
    assert not missing, f"kernels not compiled for every arch: {missing}"
    sources = {Path(r.source).name for r in rows}
    expected = {p.name for p in (ROOT / "csrc" / "cuda").glob("*.cu")}
    assert sources == expected, f"resource usage covers {sources}, csrc/cuda has {expected}: rebuild"


def test_resource_table_lists_the_current_kernels() -> None:
    rows = _built_rows()
    assert rt.TABLE_FILE.exists(), (
        "docs/cuda_resources.md is missing: python tests/kernels/cuda/resource_table.py"
    )
    committed = rt.table_kernels(rt.TABLE_FILE.read_text())
    current = rt.table_kernels(rt.render(rows))
    if shutil.which("c++filt") is None:  # names cannot be demangled here: compare kernels per source and arch
        committed = {
            (src, arch, sum(1 for s, _, a in committed if (s, a) == (src, arch)))
            for src, _, arch in committed
        }
        current = {
            (src, arch, sum(1 for s, _, a in current if (s, a) == (src, arch))) for src, _, arch in current
        }
    assert committed == current, (
        "docs/cuda_resources.md is stale (regenerate: python tests/kernels/cuda/resource_table.py); "
        f"only in the table: {sorted(committed - current)}, only in the build: {sorted(current - committed)}"
    )


# ---------------------------------------------------------------------------------------------------
# SASS: compile conv2d.cu for sm_80 and sm_90 here and look at the instructions
# ---------------------------------------------------------------------------------------------------


def _find_tool(name: str, nvcc: str) -> str | None:
    candidates = [shutil.which(name), str(Path(os.path.realpath(nvcc)).parent / name)]
    candidates += [
        str(Path(os.environ[v]) / "bin" / name) for v in ("CUDA_HOME", "CUDA_PATH") if v in os.environ
    ]
    candidates.append(f"/usr/local/cuda/bin/{name}")
    try:  # Triton wheels bundle cuobjdump/nvdisasm
        import triton

        candidates.append(str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name))
    except ImportError:
        pass
    return next((c for c in candidates if c and Path(c).is_file() and os.access(c, os.X_OK)), None)


@pytest.fixture(scope="module")
def conv_sass(tmp_path_factory) -> dict[tuple[str, str], str]:
    """{(arch, mangled kernel): SASS text} of csrc/cuda/conv2d.cu, compiled here for sm_80 and sm_90."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not found: cannot compile the kernels to inspect their SASS")
    cuobjdump = _find_tool("cuobjdump", nvcc)
    if cuobjdump is None:
        pytest.skip("cuobjdump not found (CUDA toolkit bin/, PATH, or triton's bundled copy)")
    obj = tmp_path_factory.mktemp("sass") / "conv2d.o"
    cmd = [nvcc, "-c", str(ROOT / "csrc" / "cuda" / "conv2d.cu"), "-o", str(obj), "-O3", "-std=c++17",
           "--expt-relaxed-constexpr", f"-I{ROOT / 'csrc' / 'include'}",
           "-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=sm_90"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    sass = subprocess.run([cuobjdump, "-sass", str(obj)], capture_output=True, text=True, check=True).stdout
    kernels: dict[tuple[str, str], str] = {}
    arch, name = "", ""
    for line in sass.splitlines():
        if m := re.search(r"arch = (sm_\d+)", line):
            arch, name = m.group(1), ""
        elif m := re.search(r"Function : (\S+)", line):
            name = m.group(1)
            kernels[(arch, name)] = ""
        elif name:
            kernels[(arch, name)] += line + "\n"
    assert kernels, f"no functions in the SASS of {obj}"
    return kernels


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_conv_kernels_use_tensor_cores(conv_sass: dict[tuple[str, str], str], arch: str) -> None:
    mma = {n: s for (a, n), s in conv_sass.items() if a == arch and "conv_mma_kernel" in n}
    simt = {n: s for (a, n), s in conv_sass.items() if a == arch and "conv_simt_kernel" in n}
    assert len(mma) == 4 and len(simt) == 1, f"{arch}: unexpected kernels {sorted(mma) + sorted(simt)}"
    for name, code in mma.items():
        hmma = re.findall(r"HMMA\.16816\.F32(\.BF16)?", code)
        assert hmma, f"{arch} {name}: no HMMA.16816.F32 (tensor-core) instruction"
        is_bf16 = "nv_bfloat16" in name
        assert all(bool(b) == is_bf16 for b in hmma), f"{arch} {name}: HMMA of the wrong input type"
        assert "LDGSTS" in code, f"{arch} {name}: no cp.async (LDGSTS) in the tensor-core main loop"
    for name, code in simt.items():
        assert "FFMA" in code and "HMMA" not in code, f"{arch} {name}: expected FP32 FFMA only"
