"""The Winograd conv's per-thread scratch (winograd_kernels.h thread_scratch) is reused between calls without
being cleared: V, M and the bilinear staging of one call must never leak into the next.

Each variant runs a sequence of calls whose shapes, channel counts, schedules (own blocks / shared blocks:
few tiles and big weights) and views differ, interleaved with "dirtying" calls on inputs of magnitude 1e30 that
leave huge values in every buffer they touch; a read of a stale element would put a huge value (or inf)
into the next output. Every output is compared with float64 at the Winograd budget, in 1 and 2 threads."""

from __future__ import annotations

import pytest
import torch

from unet_fast.kernels import spec
from unet_fast.kernels.cpu_winograd import available_isas, conv3x3_winograd, pack_winograd_weight
from unet_fast.kernels.spec import InputView, Resample

pytestmark = pytest.mark.skipif(not available_isas(), reason="unet_fast._C was built without the Winograd kernel")
REL_L2_BUDGET = 1e-4

# (N, H, W, input channels per view, Cout, bilinear second view): big and small V / M, few and many tiles
CASES = [
    (1, 40, 36, [64], 96, False),  # own blocks, small weights
    (1, 9, 11, [200], 320, False),  # few tiles: shared blocks
    (2, 13, 7, [5, 11], 24, True),  # two views, the second bilinear-upsampled (staging scratch), odd sizes
    (1, 10, 12, [200], 240, False),  # big weights (> 6 MiB transformed): long shared blocks
    (1, 6, 5, [3], 17, False),  # tiny, 1 partial tile row
]


def run_case(case: tuple, isa: str, scale: float, seed: int, tile: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    n, h, w, cins, cout, bilinear = case
    g = torch.Generator().manual_seed(seed)
    views: list = [torch.randn(n, h, w, cins[0], generator=g) * scale]
    if len(cins) > 1:
        if bilinear:
            src = torch.randn(n, (h + 1) // 2, (w + 1) // 2, cins[1], generator=g) * scale
            views.append(InputView(src, Resample("bilinear", (h, w), align_corners=True)))
        else:
            views.append(torch.randn(n, h, w, cins[1], generator=g) * scale)
    wt = torch.randn(cout, sum(cins), 3, 3, generator=g) * (2.0 / (9 * sum(cins))) ** 0.5
    b = torch.randn(cout, generator=g)
    out = torch.full((n, h, w, cout), float("nan"))
    got = conv3x3_winograd(views, pack_winograd_weight(wt, isa=isa, tile=tile), b, padding=1, act="relu", out=out)
    v64 = [
        InputView(v.tensor.double(), v.resample, v.offset, v.size) if isinstance(v, InputView) else v.double()
        for v in views
    ]
    ref = spec.conv2d(v64, wt.double(), b.double(), padding=1, act="relu")
    return got, ref


@pytest.mark.parametrize("first_tile", [4, 6])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("isa", available_isas())
def test_reused_scratch_never_leaks_between_calls(isa: str, threads: int, first_tile: int) -> None:
    """F(4x4) and F(6x6) calls alternate (their V and M layouts differ: 36 / 64 points, other strides), each
    after a dirtying call of the other tile on the previous shape and one of its own tile on its own shape, so a
    stale element of either layout shows."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        order = [*CASES, CASES[3], CASES[0], CASES[2]]
        for i, case in enumerate(order):
            tile = first_tile if i % 2 == 0 else 10 - first_tile
            other = 10 - tile
            run_case(order[i - 1], isa, 1e30, seed=100 + i, tile=other)  # dirty every buffer the previous shape used
            run_case(case, isa, 1e30, seed=200 + i, tile=tile)  # and this shape's and tile's, other huge values
            got, ref = run_case(case, isa, 1.0, seed=i, tile=tile)
            what = f"{isa} {threads}T call {i} F({tile}) {case}"
            assert torch.isfinite(got).all(), f"{what}: non-finite output"
            err = ((got.double() - ref).norm() / ref.norm()).item()
            assert err <= REL_L2_BUDGET, f"{what}: rel-L2 {err:.2e}"
    finally:
        torch.set_num_threads(old)
