"""unet64 (base 64, depth 4, BN, transposed-conv up, softmax): 256x256 and 512x512 (batch 4 with --bench-full)."""

import pytest

from unet_fast.bench.contenders import CONTENDERS


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
