"""CI GPU compile check without a GPU: every shipped config of every Triton kernel compiles for sm_80
and sm_90 with zero spills, shared memory within the arch's limit and tensor-core instructions in the
fp16/bf16 GEMM kernels; the committed docs/triton_resources.md matches what this triton produces."""

from __future__ import annotations

import json

import pytest
import torch

from unet_fast.kernels.triton import aot, configs


@pytest.fixture(scope="module")
def compiled() -> dict:
    ok, why = aot.can_compile_for_cuda()
    if not ok:
        pytest.skip(f"this triton cannot compile for CUDA targets: {why}")
    proc = aot.run_in_subprocess(["--json"])
    assert proc.returncode == 0, f"aot compile failed:\n{proc.stderr[-4000:]}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if "skip" in result:
        pytest.skip(f"this triton cannot compile for CUDA targets: {result['skip']}")
    return result


def test_every_shipped_config_compiled_for_both_archs(compiled):
    got = {(r["op"], r["dtype"], r["arch"], r["config"]) for r in compiled["rows"]}
    want = set()
    for op in configs.OPS:
        for name, dtype in aot.DTYPE_NAMES.items():
            for arch in aot.ARCHS:
                want |= {(op, name, arch, aot._config_str(c)) for c in configs.configs_for(op, dtype, arch)}
                if op in aot.TF32_OPS and name == "fp32":  # the tf32 opt-in runs the fp32 configs
                    want |= {
                        (op, "tf32", arch, aot._config_str(c)) for c in configs.configs_for(op, dtype, arch)
                    }
    assert got == want
    assert {r["arch"] for r in compiled["rows"]} == {80, 90}
    assert all(r["registers"] > 0 for r in compiled["rows"]), "cuobjdump reported no register count"


def test_no_spills_shared_within_limit_tensor_cores(compiled):
    assert aot.problems(compiled["rows"]) == []
    gemm16 = [r for r in compiled["rows"] if r["op"] in aot.GEMM_OPS and r["dtype"] != "fp32"]
    assert gemm16 and all(r["tensor_cores"] for r in gemm16)
    assert any(r["dtype"] == "tf32" and r["tensor_cores"] for r in compiled["rows"])


def test_committed_table_is_current(compiled):
    import triton

    committed = aot.TABLE_PATH.read_text()
    if f"Triton {triton.__version__}." not in committed:
        pytest.skip(f"docs/triton_resources.md was generated with another Triton than {triton.__version__}")
    assert committed == compiled["table"], (
        "docs/triton_resources.md is stale: python -m unet_fast.kernels.triton.aot --table docs/triton_resources.md"
    )


def test_interpreter_configs_exist_for_every_op():
    for op in configs.OPS:
        cfg = configs.interpreter_config(op)
        assert cfg["BLOCK_M"] >= 16 and configs.configs_for(op, torch.float16, 90)


@pytest.mark.parametrize("op", ["conv2d", "conv_transpose2x2", "head", "maxpool2x2", "upsample_concat"])
def test_autotuned_launchers_build_with_this_triton(op):
    """The GPU path's `triton.autotune(configs=..., key=...)` objects, built for both archs and every dtype
    (no GPU needed): an autotune or Config argument this triton does not take fails here, not on the GPU
    machine (.ci/run also runs this file with triton 3.6, the version the lent H200 has)."""
    import importlib

    module = importlib.import_module(f"unet_fast.kernels.triton.{op}")
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for arch in aot.ARCHS:
            tuned = module._autotuned_kernel(dtype, arch)
            want = [aot._config_str(c) for c in configs.configs_for(op, dtype, arch)]
            got = [aot._config_str({**c.kwargs, "num_warps": c.num_warps, "num_stages": c.num_stages})
                   for c in tuned.configs]  # fmt: skip
            assert got == want, f"{op} {dtype} sm_{arch}"
