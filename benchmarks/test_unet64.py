"""unet64 (base 64, depth 4, BN, transposed-conv up, softmax): 256x256 and 512x512 (batch 4 with --bench-full);
the bf16 comparison (issue 17) at 256x256 and 512x512."""

import pytest
import torch

from unet_fast.bench.contenders import CONTENDERS

# The bf16 table of shared/BENCHMARKING.md: unet_fast cpu bf16 against the bf16 peers (eager channels_last,
# torch.compile with freezing, OpenVINO at its default precision), with ONNX Runtime and OpenVINO pinned f32
# as fp32 reference rows (each row's extra_info says its precision).
BF16_CONTENDERS = ("eager-cl", "compile", "openvino-default", "openvino", "onnxruntime", "unet_fast-cpu")


def _bf16_case(request, run_case, workload: str, contender: str) -> None:
    if request.config.getoption("--bench-dtype") == "bfloat16":
        pytest.skip("--bench-dtype bfloat16: the plain cases already run this comparison in bf16")
    run_case(workload, contender, dtype=torch.bfloat16)


@pytest.mark.parametrize("contender", list(CONTENDERS))
def test_unet64_256(run_case, contender: str) -> None:
    run_case("unet64-256", contender)


@pytest.mark.parametrize("contender", list(CONTENDERS))
def test_unet64_512(run_case, contender: str) -> None:
    run_case("unet64-512", contender)


@pytest.mark.parametrize("contender", list(CONTENDERS))
def test_unet64_512_batch4(run_case, request, contender: str) -> None:
    if not request.config.getoption("--bench-full"):
        pytest.skip("batch 4 at 512x512 is a long case: run with --bench-full")
    run_case("unet64-512", contender, batch=4)


@pytest.mark.parametrize("contender", BF16_CONTENDERS)
def test_unet64_256_bf16(run_case, request, contender: str) -> None:
    _bf16_case(request, run_case, "unet64-256", contender)


@pytest.mark.parametrize("contender", BF16_CONTENDERS)
def test_unet64_512_bf16(run_case, request, contender: str) -> None:
    _bf16_case(request, run_case, "unet64-512", contender)
