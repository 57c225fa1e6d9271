"""smp-resnet34 (segmentation_models_pytorch Unet('resnet34'), 1x3x512x512), only where smp imports."""

import pytest

from unet_fast.bench.contenders import CONTENDERS
from unet_fast.bench.workloads import unavailable_workloads


@pytest.mark.parametrize("contender", list(CONTENDERS))
def test_smp_resnet34(run_case, contender: str) -> None:
    why = unavailable_workloads().get("smp-resnet34")
    if why:
        pytest.skip(f"smp-resnet34: {why}")
    run_case("smp-resnet34", contender)
