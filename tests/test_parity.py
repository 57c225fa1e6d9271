import math

import pytest
import torch

from unet_fast.parity import assert_parity, compare, mean_iou


def test_identical_outputs() -> None:
    x = torch.randn(2, 3, 9, 11).softmax(1)
    r = compare(x, x.clone())
    assert r.max_abs == 0 and r.rel_l2 == 0 and r.argmax_agreement == 1.0 and r.mean_iou == 1.0


def test_metrics_on_a_known_difference() -> None:
    ref = torch.zeros(1, 2, 2, 2)
    ref[:, 0] = 1.0  # class 0 everywhere
    out = ref.clone()
    out[0, :, 0, 0] = torch.tensor([0.0, 1.0])  # one pixel flips to class 1
    r = compare(ref, out)
    assert r.max_abs == 1.0
    assert r.worst_index in {(0, 0, 0, 0), (0, 1, 0, 0)}
    assert r.rel_l2 == pytest.approx(math.sqrt(2) / 2)
    assert r.argmax_agreement == 0.75
    assert r.mean_iou == pytest.approx((3 / 4 + 0 / 1) / 2)


def test_assert_parity_fails_with_report() -> None:
    ref = torch.randn(1, 3, 8, 8)
    out = ref.clone()
    out[0, 1, 2, 3] += 0.5
    with pytest.raises(AssertionError, match=r"(?s)max_abs 0.5 > 0.001.*at \(0, 1, 2, 3\)"):
        assert_parity(ref, out, max_abs=1e-3)
    assert_parity(ref, out, max_abs=0.51)


def test_nan_is_never_within_tolerance() -> None:
    ref = torch.randn(1, 2, 4, 4)
    out = ref.clone()
    out[0, 0, 1, 1] = float("nan")
    with pytest.raises(AssertionError, match="1 non-finite"):
        assert_parity(ref, out, max_abs=10.0)


def test_class_maps_and_sigmoid() -> None:
    a = torch.tensor([[0, 1], [2, 2]])
    assert mean_iou(a, a) == 1.0
    r = compare(torch.tensor([[[[0.9, 0.2]]]]), torch.tensor([[[[0.6, 0.4]]]]))  # one channel: threshold 0.5
    assert r.argmax_agreement == 1.0
    with pytest.raises(ValueError, match="shape mismatch"):
        compare(torch.zeros(1, 2), torch.zeros(2, 1))
