"""CPU conv_transpose2x2 against spec.conv_transpose2x2: every activation, odd sizes, batch > 1, written
into a slot of a poisoned concat buffer, reading a channel slice."""

import pytest
import torch
from cpu_testutil import BATCHES, assert_close, assert_outside_slot_untouched, conv_weight, poisoned_slot

from unet_fast.kernels import cpu, spec
from unet_fast.kernels.spec import ACTIVATIONS

F32 = torch.float32


@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("hw", [(9, 11), (17, 23)])
@pytest.mark.parametrize("cin,cout", [(3, 5), (37, 3), (5, 37)])
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_conv_transpose2x2_into_slot(n: int, hw: tuple[int, int], cin: int, cout: int, act: str) -> None:
    x, w, b = torch.randn(n, *hw, cin), conv_weight(cin, cout, 2, 2), torch.randn(cout)
    buf, slot = poisoned_slot((n, 2 * hw[0], 2 * hw[1], cout))
    got = cpu.conv_transpose2x2(x, cpu.pack_conv_transpose_weight(w, F32), b, act=act, negative_slope=0.3,
                                out=slot)  # fmt: skip
    assert got.data_ptr() == slot.data_ptr()
    assert_close(slot, spec.conv_transpose2x2(x, w, b, act=act, negative_slope=0.3), f"convT {act}")
    assert_outside_slot_untouched(buf, 2, 3)


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
