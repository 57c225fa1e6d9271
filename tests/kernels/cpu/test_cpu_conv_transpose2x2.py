"""CPU conv_transpose2x2 against spec.conv_transpose2x2: every activation, odd sizes, batch > 1, every kernel
variant this CPU runs (weights packed per variant), written into a slot of a poisoned concat buffer,
reading a channel slice."""

import pytest
import torch
from cpu_testutil import (
    BATCHES,
    ISAS,
    assert_close,
    assert_outside_slot_untouched,
    conv_weight,
    poisoned_slot,
)

from unet_fast.kernels import cpu, spec
from unet_fast.kernels.spec import ACTIVATIONS

F32 = torch.float32


# W = 9, 11, 17, 23: never a whole number of 6- or 8-pixel tiles. With 16-channel blocks (8 lanes): Cout 5,
# 3 one partial block; 37 two whole + 5; 24 one whole + 8 (the second vector empty). With 32-channel blocks
# (16 lanes): 37 one whole + 5; 24 one partial block whose second vector holds 8 of 16 lanes.
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("hw", [(9, 11), (17, 23)])
@pytest.mark.parametrize("cin,cout", [(3, 5), (37, 3), (5, 37), (16, 24)])
@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("isa", ISAS)
def test_conv_transpose2x2_into_slot(n: int, hw: tuple[int, int], cin: int, cout: int, act: str,
                                     isa: str) -> None:  # fmt: skip
    x, w, b = torch.randn(n, *hw, cin), conv_weight(cin, cout, 2, 2), torch.randn(cout)
    buf, slot = poisoned_slot((n, 2 * hw[0], 2 * hw[1], cout))
    packed = cpu.pack_conv_transpose_weight(w, F32, isa=isa)
    assert packed.isa == isa
    got = cpu.conv_transpose2x2(x, packed, b, act=act, negative_slope=0.3, out=slot)
    assert got.data_ptr() == slot.data_ptr()
    assert_close(slot, spec.conv_transpose2x2(x, w, b, act=act, negative_slope=0.3), f"convT {act} {isa}")
    assert_outside_slot_untouched(buf, 2, 3)


@pytest.mark.parametrize("isa", ISAS)
def test_conv_transpose2x2_blocked(isa: str) -> None:
    """A weight bigger than one panel group (> 512 KiB) and more rows than one row block: every block of
    the work decomposition is computed once, with two threads."""
    x, w, b = torch.randn(2, 5, 9, 1100), conv_weight(1100, 20, 2, 2), torch.randn(20)
    got = torch.full((2, 10, 18, 20), float("nan"))  # poisoned: an unwritten element fails
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cpu.conv_transpose2x2(x, cpu.pack_conv_transpose_weight(w, F32, isa=isa), b, act="relu", out=got)
    finally:
        torch.set_num_threads(threads)
    assert_close(got, spec.conv_transpose2x2(x, w, b, act="relu"), f"convT blocked {isa}")


def test_conv_transpose2x2_slice_input_no_bias() -> None:
    big = torch.randn(3, 7, 9, 20)
    x, w = big[..., 4:15], conv_weight(11, 6, 2, 2)
    got = cpu.conv_transpose2x2(x, cpu.pack_conv_transpose_weight(w, F32), None)
    assert_close(got, spec.conv_transpose2x2(x, w, None), "convT of a slice")


def test_conv_transpose2x2_bad_input() -> None:
    x, w = torch.randn(1, 4, 4, 3), cpu.pack_conv_transpose_weight(torch.randn(3, 5, 2, 2), F32)
    with pytest.raises(ValueError, match="channels but the weight expects"):
        cpu.conv_transpose2x2(torch.randn(1, 4, 4, 4), w, None)
    with pytest.raises(ValueError, match="expected"):
        cpu.conv_transpose2x2(x, w, None, out=torch.empty(1, 8, 8, 4))
    with pytest.raises(ValueError, match="unknown activation"):
        cpu.conv_transpose2x2(x, w, None, act="tanh")
    with pytest.raises(ValueError, match="IOHW"):
        cpu.pack_conv_transpose_weight(torch.randn(3, 5, 3, 3), F32)
    with pytest.raises(ValueError, match=r"cpu backend supports"):
        cpu.conv_transpose2x2(x.bfloat16(), w, None)
    with pytest.raises(ValueError, match="pack_conv_transpose_weight returns"):
        cpu.conv_transpose2x2(x, torch.randn(3, 20), None)
    with pytest.raises(ValueError, match="unknown conv_transpose2x2 isa"):
        cpu.pack_conv_transpose_weight(torch.randn(3, 5, 2, 2), F32, isa="sse9")
