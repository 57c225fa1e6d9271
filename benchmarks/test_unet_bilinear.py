"""unet-bilinear (base 64, BN, bilinear align_corners=True up, 1x3x512x512): upsample fusion."""

import pytest

from unet_fast.bench.contenders import CONTENDERS


@pytest.mark.parametrize("contender", list(CONTENDERS))
def test_unet_bilinear(run_case, contender: str) -> None:
    run_case("unet-bilinear", contender)
