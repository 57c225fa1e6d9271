"""unet-small (base 16, 1x3x256x256): latency-bound, where launch and framework overhead show."""

import pytest

from unet_fast.bench.contenders import CONTENDERS


@pytest.mark.parametrize("contender", list(CONTENDERS))
def test_unet_small(run_case, contender: str) -> None:
    run_case("unet-small", contender)
