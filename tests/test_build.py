"""The native build: both modules import (or say why not), carry metadata, and run their first op."""

import json
import platform
import re
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


def test_cpu_avx2_kernels_run_on_avx2_cpus() -> None:
    """isa="auto" picks the AVX2+FMA build of the C++ kernels on any CPU torch reports as AVX2 or better
    (the head and upsample once had `target_clones("arch=haswell")`, which GCC picks by CPU model, so their
    AVX2 code never ran on AMD or on Intel cores after Haswell)."""
    isas = cpu_isa.available_isas()
    assert "portable" in isas
    if platform.machine() == "x86_64" and torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        assert "avx2" in isas


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
    cpu_ops.activation(x, act, 0.1, out=out)
    torch.testing.assert_close(out, spec.apply_activation(x, act, 0.1))


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
    assert "portable" in info["backends"]["cpu"]["kernels"]["isas"]
    assert set(info["backends"]) == {"torch", "cpu", "triton", "cuda", "tensorrt"}
