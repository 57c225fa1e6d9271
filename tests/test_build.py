"""The native build: both modules import (or say why not), carry metadata, and run their first op."""

import json
import platform
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import unet_fast
from unet_fast import _ext
from unet_fast.kernels import cpu as cpu_ops
from unet_fast.kernels import cpu_isa, spec


def test_cpu_extension_built() -> None:
    assert _ext.cpu_ext is not None, _ext._cpu_error  # CI must fail loudly without the extension
    info = _ext.cpu_ext.build_info()
    assert info["openmp"] and info["openmp"] >= 201511
    assert "gcc" in info["compiler"].lower() or "clang" in info["compiler"].lower() or info["compiler"]
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?|unknown", info["git_commit"])


def test_build_info_file_matches_modules() -> None:
    info = _ext.build_info()
    assert info, "setup.py did not write unet_fast/_build_info.json"
    assert info["git_commit"] == _ext.cpu_ext.build_info()["git_commit"]
    cuda = info["cuda"]
    if cuda["built"]:
        assert _ext.cuda_ext is not None
        assert _ext.cuda_ext.build_info()["archs"] == ";".join(cuda["archs"])
    else:
        assert cuda["reason"]


def test_cpu_variant_detection_agrees_with_torch() -> None:
    """The registry's detection (CPUID + XCR0 OS state) finds the vector variants torch's own dispatch uses:
    AVX2+FMA on any CPU torch runs as AVX2 or better, AVX-512 where torch runs AVX512 (the head and upsample
    once had `target_clones("arch=haswell")`, which GCC picks by CPU model, so their AVX2 code never ran on
    AMD or on Intel cores after Haswell). isa="auto" is the best-ranked runnable variant."""
    isas = cpu_isa.available_isas()
    assert "portable" in isas and "portable16" in isas  # the portable variants run everywhere
    if platform.machine() == "x86_64":
        cap = torch.backends.cpu.get_cpu_capability()
        assert ("avx2" in isas) == (cap in ("AVX2", "AVX512")), (cap, isas)
        assert ("avx512" in isas) == (cap == "AVX512"), (cap, isas)
    assert (
        cpu_isa.best().name == max((v for v in cpu_isa.registry() if v.runnable), key=lambda v: v.rank).name
    )


def test_cpu_variant_registry_is_consistent() -> None:
    """Every registered variant reports its vector width and a blocking whose block is whole vectors, and
    an unknown or unrunnable isa is a ValueError naming the choices."""
    reg = cpu_isa.registry()
    assert [v.index for v in reg] == list(range(len(reg)))
    assert len({v.name for v in reg}) == len(reg) and len({v.rank for v in reg}) == len(reg)
    for v in reg:
        assert v.lanes in (8, 16) and v.winograd_nr % v.lanes == 0 and v.conv_transpose_nr % v.lanes == 0
        assert v.winograd_mr > 0 and v.conv_transpose_mr > 0
    with pytest.raises(ValueError, match="unknown CPU kernel isa 'sse9'"):
        cpu_isa.choose("sse9")
    for v in reg:
        if not v.runnable:
            with pytest.raises(ValueError, match="not available on this CPU"):
                cpu_isa.choose(v.name)


def test_single_openmp_runtime() -> None:
    """_C must share torch's libgomp: two runtimes would each spin up a thread pool on 2 cores."""
    maps = Path("/proc/self/maps").read_text()
    gomps = {line.split()[-1] for line in maps.splitlines() if "libgomp" in line}
    assert len(gomps) == 1, gomps
    assert _ext.cpu_ext.omp_max_threads() == torch.get_num_threads()


@pytest.mark.parametrize("act", spec.ACTIVATIONS)
def test_cpu_activation_matches_reference(act: str) -> None:
    x = torch.randn(1001) * 3
    out = torch.full_like(x, float("nan"))  # poisoned: an unwritten element fails
    for isa in cpu_isa.available_isas():
        out.fill_(float("nan"))
        cpu_ops.activation(x, act, 0.1, out=out, isa=isa)
        torch.testing.assert_close(
            out, spec.apply_activation(x, act, 0.1), msg=lambda m, isa=isa: f"{isa}: {m}"
        )


def test_cpu_activation_bad_input() -> None:
    with pytest.raises(ValueError, match="float32"):
        cpu_ops.activation(torch.zeros(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="non-contiguous"):
        cpu_ops.activation(torch.zeros(4, 4).t())
    with pytest.raises(ValueError, match="unknown activation"):
        cpu_ops.activation(torch.zeros(4), "gelu")


def test_cuda_module_reports_why_unusable() -> None:
    if _ext.build_info().get("cuda", {}).get("built"):
        assert _ext.cuda_ext is not None
        if not torch.cuda.is_available():
            assert "no CUDA device" in _ext.cuda_unavailable_reason()
            with pytest.raises(RuntimeError, match="CUDA backend cannot run"):
                _ext.require_cuda()
    else:
        assert _ext.cuda_unavailable_reason()


def test_cuda_kernels_compiled_without_spills() -> None:
    usage = Path(unet_fast.__file__).with_name("_cuda_resource_usage.txt")
    if not _ext.build_info().get("cuda", {}).get("built"):
        pytest.skip("the CUDA module was not built here (no nvcc)")
    text = usage.read_text()
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
    assert spills, "no ptxas resource usage recorded"
    assert all(s == ("0", "0") for s in spills), text


def test_info_cli_json(capsys) -> None:
    from unet_fast.info import main

    assert main(["--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["backends"]["torch"]["usable"]
    assert info["backends"]["cpu"]["usable"]
    kernels = info["backends"]["cpu"]["kernels"]
    assert "portable" in kernels["isas"] and kernels["auto"] in kernels["isas"]
    assert kernels["registered"] == [v.name for v in cpu_isa.registry()]
    assert set(info["backends"]) == {"torch", "cpu", "triton", "cuda", "tensorrt"}


@pytest.mark.skipif(
    platform.machine() != "x86_64" or shutil.which("objdump") is None, reason="needs x86-64 objdump"
)
def test_wide_vector_code_only_in_its_variant() -> None:
    """Each variant is compiled under its own `#pragma GCC target`; code outside it (the baseline ops, the
    registry, any template a variant file instantiates) must not use ymm / zmm registers, or a CPU without
    AVX2 / AVX-512 would fault in a path the registry says it can run. Scans the module's disassembly."""
    so = Path(_ext.cpu_ext.__file__)
    asm = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-C", str(so)], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    func, leaks, seen = "", set(), {"avx2": 0, "avx512": 0, "amx": 0, "avx512bf16": 0}
    for line in asm.splitlines():
        m = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if m:
            func = m.group(1)
            continue
        zmm, ymm = "%zmm" in line, "%ymm" in line
        if not (zmm or ymm):
            continue
        if "unet_fast::avx512::" in func:
            seen["avx512"] += 1
        elif re.match(r"unet_fast::amx::(native::|\w+_amx\()", func):
            # the AMX tile code (csrc/cpu/amx/*_amx.cpp, under UF_TARGET_AMX, which includes AVX-512): run only
            # where kernels/cpu_bf16.py's detection found AMX (tests/kernels/cpu_bf16 checks that gate)
            seen["amx"] += 1
        elif re.match(r"(\w+ )?unet_fast::amx::(avx512bf16::|TilesAvx512Bf16::|\w+_avx512bf16\()", func):
            # the AVX512-BF16 tile backend (csrc/cpu/amx/conv_bf16_avx512bf16.cpp under UF_TARGET_AVX512BF16,
            # amx/tile_avx512bf16.h; a template member demangles with its return type first): run only where
            # cpu_bf16's detection found AVX512-BF16 + the AVX-512 state
            seen["avx512bf16"] += 1
        elif ymm and not zmm and "unet_fast::avx2::" in func:
            seen["avx2"] += 1
        else:
            leaks.add(func[:160])
    assert not leaks, f"wide-vector instructions outside their variant: {sorted(leaks)[:10]}"
    # the scan saw the variants' code at all (amx, avx512bf16: where built)
    assert seen["avx2"] and seen["avx512"], seen
