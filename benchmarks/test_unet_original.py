"""unet-original (Ronneberger 2015: valid convs, crop + concat, 1x1x572x572 -> 388x388)."""

import pytest

from unet_fast.bench.contenders import CONTENDERS


@pytest.mark.parametrize("contender", list(CONTENDERS))
def test_unet_original(run_case, contender: str) -> None:
    run_case("unet-original", contender)
