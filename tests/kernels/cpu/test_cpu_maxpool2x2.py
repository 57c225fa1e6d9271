"""CPU maxpool2x2 against spec.maxpool2x2 (F.max_pool2d): odd sizes, batch > 1, slots in and out."""

import pytest
import torch
from cpu_testutil import (
    BATCHES,
    CHANNELS,
    ISAS,
    NAN,
    assert_close,
    assert_outside_slot_untouched,
    poisoned_slot,
)

from unet_fast.kernels import cpu, spec


@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("hw", [(17, 23), (33, 47), (2, 2), (3, 5), (6, 4)])
@pytest.mark.parametrize("c", CHANNELS)
@pytest.mark.parametrize("isa", ISAS)
def test_maxpool2x2_into_slot(n: int, hw: tuple[int, int], c: int, isa: str) -> None:
    x = torch.randn(n, *hw, c)
    buf, slot = poisoned_slot((n, hw[0] // 2, hw[1] // 2, c))
    got = cpu.maxpool2x2(x, out=slot, isa=isa)
    assert got.data_ptr() == slot.data_ptr()
    assert_close(slot, spec.maxpool2x2(x), f"maxpool2x2 {isa}")
    assert_outside_slot_untouched(buf, 2, 3)


def test_maxpool2x2_reads_a_slice_and_allocates() -> None:
    big = torch.randn(3, 19, 21, 40)
    x = big[..., 4 : 41 - 4]  # a channel slice: N/H/W strides of the big buffer
    assert_close(cpu.maxpool2x2(x), spec.maxpool2x2(x), "maxpool2x2 of a slice")


def test_maxpool2x2_propagates_nan() -> None:
    x = torch.randn(1, 4, 4, 3)
    x[0, 1, 2, 1] = NAN
    got = cpu.maxpool2x2(x)
    assert got[0, 0, 1, 1].isnan() and not got[0, 0, 1, 0].isnan()
    assert got.isnan().sum() == 1


def test_maxpool2x2_bad_input() -> None:
    with pytest.raises(ValueError, match="at least 2x2"):
        cpu.maxpool2x2(torch.randn(1, 1, 5, 3))
    with pytest.raises(ValueError, match="expected"):
        cpu.maxpool2x2(torch.randn(1, 4, 4, 3), out=torch.empty(1, 2, 3, 3))
    with pytest.raises(ValueError, match=r"cpu backend supports.*float32"):
        cpu.maxpool2x2(torch.randn(1, 4, 4, 3, dtype=torch.float16))
