"""CPU head against spec.head: 1x1 conv + softmax / sigmoid / logits into a poisoned slot, argmax into a
poisoned class map of every index dtype, reading through a view."""

import pytest
import torch
from cpu_testutil import BATCHES, ISAS, SIZES, assert_close, assert_outside_slot_untouched, poisoned_slot

from unet_fast.kernels import cpu, spec
from unet_fast.kernels.spec import InputView, Resample

F32 = torch.float32


@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("hw", SIZES)
# (c, k) covers the kernel's paths: C < 8 (tail only), C = 8m and 8m + tail; classes in pairs, an odd last
# class (the 8-pixel x 1-class block), a single class, and the two-class softmax shortcut.
@pytest.mark.parametrize("c,k", [(3, 2), (37, 5), (5, 1), (64, 2), (19, 3), (16, 1)])
@pytest.mark.parametrize("op", ["softmax", "sigmoid", "logits"])
@pytest.mark.parametrize("isa", ISAS)
def test_head_scores_into_slot(n: int, hw: tuple[int, int], c: int, k: int, op: str, isa: str) -> None:
    x, w, b = torch.randn(n, *hw, c), torch.randn(k, c, 1, 1), torch.randn(k)
    buf, slot = poisoned_slot((n, *hw, k))
    got = cpu.head(x, cpu.pack_head_weight(w, F32, isa=isa), b, op, out=slot)
    assert got.data_ptr() == slot.data_ptr()
    assert_close(slot, spec.head(x, w, b, op), f"head {op} {isa}")
    assert_outside_slot_untouched(buf, 2, 3)


@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32, torch.int64])
@pytest.mark.parametrize("c,k", [(3, 2), (37, 5)])
@pytest.mark.parametrize("isa", ISAS)
def test_head_argmax_class_map(
    n: int, hw: tuple[int, int], dtype: torch.dtype, c: int, k: int, isa: str
) -> None:
    x, w, b = torch.randn(n, *hw, c), torch.randn(k, c), torch.randn(k)
    # The class map is a window of a bigger poisoned map: W stride 1, H stride W + 3.
    buf = torch.full((n, hw[0], hw[1] + 3), 99, dtype=dtype)
    out = buf[:, :, 1 : hw[1] + 1]
    cpu.head(x, cpu.pack_head_weight(w, F32, isa=isa), b, "argmax", out=out)
    assert torch.equal(out, spec.head(x, w, b, "argmax").to(dtype))
    assert (buf[:, :, 0] == 99).all() and (buf[:, :, hw[1] + 1 :] == 99).all()


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("isa", ISAS)
def test_head_softmax_sigmoid_extremes(k: int, isa: str) -> None:
    """Scores far apart (exp underflows), infinities and NaN: finite where torch is, NaN where torch is."""
    c = 8
    x = torch.randn(1, 3, 11, c)
    w, b = torch.zeros(k, c), torch.zeros(k)
    w[:, 0] = torch.tensor([1.0, -1.0, 0.5][:k])
    x[0, 0, :, 0] = torch.tensor([0.0, 1e3, -1e3, 90.0, -90.0, 1e30, -1e30, 5.0, -5.0, 30.0, -30.0])
    x[0, 1, :5, 0] = torch.tensor([float("inf"), float("-inf"), float("nan"), 1e-30, -1e-30])
    packed = cpu.pack_head_weight(w, F32, isa=isa)
    for op in ("softmax", "sigmoid"):
        got, ref = cpu.head(x, packed, b, op), spec.head(x, w, b, op)
        assert torch.equal(got.isnan(), ref.isnan()), op
        keep = ~ref.isnan()
        torch.testing.assert_close(got[keep], ref[keep], atol=1e-6, rtol=1e-5)


def test_head_argmax_ties_and_default_dtype() -> None:
    """Equal scores: the first class wins, like torch.argmax; the default class map is int64."""
    x = torch.randn(2, 5, 7, 4)
    w = torch.randn(1, 4).repeat(3, 1)  # three identical classes
    got = cpu.head(x, cpu.pack_head_weight(w, F32), None, "argmax")
    assert got.dtype == torch.int64 and (got == 0).all()


def test_head_reads_a_view() -> None:
    small = torch.randn(2, 9, 12, 6)
    view = InputView(small, Resample("bilinear", (18, 24), True), offset=(0, 1), size=(17, 23))
    w, b = torch.randn(3, 6, 1, 1), torch.randn(3)
    assert_close(cpu.head(view, cpu.pack_head_weight(w, F32), b, "softmax"), spec.head(view, w, b, "softmax"),
                 "head of a view")  # fmt: skip


def test_head_reads_a_channel_slice() -> None:
    big = torch.randn(1, 17, 23, 40)
    x = big[..., 3:40]
    w, b = torch.randn(2, 37), torch.randn(2)
    assert_close(cpu.head(x, cpu.pack_head_weight(w, F32), b, "sigmoid"), spec.head(x, w, b, "sigmoid"),
                 "head of a slice")  # fmt: skip


def test_head_bad_input() -> None:
    x, w = torch.randn(1, 4, 4, 3), cpu.pack_head_weight(torch.randn(300, 3), F32)
    with pytest.raises(ValueError, match="unknown head op"):
        cpu.head(x, w, None, "tanh")
    with pytest.raises(ValueError, match="unknown head isa"):
        cpu.pack_head_weight(torch.randn(3, 3), F32, isa="sse9")
    with pytest.raises(ValueError, match="pack_head_weight returns"):
        cpu.head(x, torch.randn(3, 3), None, "softmax")
    with pytest.raises(ValueError, match="at most 256 classes"):
        cpu.head(x, w, None, "argmax", out=torch.empty(1, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="head weight expects"):
        cpu.head(torch.randn(1, 4, 4, 5), w, None, "softmax")
    with pytest.raises(ValueError, match="dtype"):
        cpu.head(x, w, None, "argmax", out=torch.empty(1, 4, 4, dtype=torch.float32))
    with pytest.raises(ValueError, match=r"cpu backend supports"):
        cpu.head(x.half(), w, None, "softmax")
