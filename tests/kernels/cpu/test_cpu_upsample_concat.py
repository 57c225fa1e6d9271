"""CPU upsample_concat against spec.upsample_concat: every resample mode, crop and negative-offset pad
windows, odd sizes, batch > 1, written into a slot of a poisoned buffer."""

import pytest
import torch
from cpu_testutil import BATCHES, ISAS, SIZES, assert_close, assert_outside_slot_untouched, poisoned_slot

from unet_fast.kernels import cpu, spec
from unet_fast.kernels.spec import InputView, Resample

MODES = [("nearest", False), ("bilinear", False), ("bilinear", True)]


def views_for(n: int, hw: tuple[int, int], mode: str, ac: bool) -> list[InputView]:
    """Three views of (H, W) = hw: a 2x upsample (cropped by one where hw is odd), a centre crop of a
    bigger skip (valid U-Net), and a pad window (milesial's F.pad: negative offset, past the edge)."""
    h, w = hw
    small = torch.randn(n, (h + 1) // 2, (w + 1) // 2, 3)
    up = InputView(small, Resample(mode, (small.shape[1] * 2, small.shape[2] * 2), ac), (0, 1), (h, w))
    skip = torch.randn(n, h + 4, w + 6, 5)
    crop = InputView(skip, offset=(2, 3), size=(h, w))
    short = torch.randn(n, h - 3, w - 2, 37)
    pad = InputView(short, offset=(-1, -1), size=(h, w))
    return [up, crop, pad]


@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("mode,ac", MODES)
@pytest.mark.parametrize("isa", ISAS)
def test_upsample_concat_views_into_slot(n: int, hw: tuple[int, int], mode: str, ac: bool, isa: str) -> None:
    views = views_for(n, hw, mode, ac)
    buf, slot = poisoned_slot((n, *hw, 3 + 5 + 37))
    cpu.upsample_concat(views, out=slot, isa=isa)
    assert_close(slot, spec.upsample_concat(views), f"upsample_concat {mode} ac={ac} {isa}")
    assert_outside_slot_untouched(buf, 2, 3)


@pytest.mark.parametrize("mode,ac", MODES)
@pytest.mark.parametrize(
    "src,dst", [((7, 9), (17, 23)), ((33, 47), (17, 23)), ((5, 5), (5, 5)), ((1, 3), (4, 7))]
)
def test_upsample_concat_arbitrary_scale(
    mode: str, ac: bool, src: tuple[int, int], dst: tuple[int, int]
) -> None:
    """Non-2x factors (down too) exercise the general coordinate paths of resample.h."""
    x = torch.randn(2, *src, 5)
    view = InputView(x, Resample(mode, dst, ac))
    assert_close(cpu.upsample_concat([view]), spec.upsample_concat([view]), f"{mode} {src}->{dst}")


def test_upsample_concat_reads_channel_slices() -> None:
    big = torch.randn(2, 9, 11, 20)
    a, b = big[..., 1:4], big[..., 10:17]
    views = [InputView(a, Resample("bilinear", (18, 22), True)), InputView(b, Resample("nearest", (18, 22)))]
    assert_close(cpu.upsample_concat(views), spec.upsample_concat(views), "slices")


def test_upsample_concat_window_entirely_outside_reads_zeros() -> None:
    x = torch.randn(1, 4, 4, 3)
    got = cpu.upsample_concat([InputView(x, offset=(10, -20), size=(3, 2))])
    assert torch.equal(got, torch.zeros(1, 3, 2, 3))


def test_upsample_concat_bad_input() -> None:
    a, b = torch.randn(1, 4, 4, 3), torch.randn(1, 5, 4, 3)
    with pytest.raises(ValueError, match="views must agree"):
        cpu.upsample_concat([a, b])
    with pytest.raises(ValueError, match="expected"):
        cpu.upsample_concat([a], out=torch.empty(1, 4, 4, 4))
    with pytest.raises(ValueError, match=r"cpu backend supports"):
        cpu.upsample_concat([a.half()])
    with pytest.raises(ValueError, match=r"cpu backend supports"):
        cpu.upsample_concat([a], out=torch.empty(1, 4, 4, 3, dtype=torch.bfloat16))
