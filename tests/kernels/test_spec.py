"""The kernel contract itself: the references must mean what the PyTorch modules of a U-Net mean."""

import pytest
import torch
import torch.nn.functional as F

from unet_fast.graph.bn_fold import fold_bn
from unet_fast.kernels import checks, spec


def nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)


@pytest.mark.parametrize("mode,ac", [("nearest", False), ("bilinear", False), ("bilinear", True)])
def test_view_resample_matches_upsample_module(mode: str, ac: bool) -> None:
    x = torch.randn(2, 5, 7, 9)
    kw = {"align_corners": ac} if mode == "bilinear" else {}
    ref = torch.nn.Upsample(scale_factor=2, mode=mode, **kw)(x)
    got = spec.read_view(spec.InputView(nhwc(x), spec.Resample(mode, (14, 18), ac)))
    torch.testing.assert_close(got, nhwc(ref), rtol=1e-6, atol=1e-6)


def test_view_crop_and_pad() -> None:
    x = torch.randn(1, 3, 10, 12)
    crop = spec.read_view(spec.InputView(nhwc(x), offset=(2, 3), size=(6, 6)))
    torch.testing.assert_close(crop, nhwc(x[:, :, 2:8, 3:9]))
    pad = spec.read_view(spec.InputView(nhwc(x), offset=(-1, -2), size=(11, 15)))  # milesial's F.pad
    torch.testing.assert_close(pad, nhwc(F.pad(x, [2, 1, 1, 0])))


def test_conv_virtual_concat_residual_pool_slot() -> None:
    a, b = torch.randn(2, 9, 11, 3), torch.randn(2, 9, 11, 4)
    w, bias = torch.randn(6, 7, 3, 3), torch.randn(6)
    res = torch.randn(2, 9, 11, 6)
    buf = torch.full((2, 9, 11, 10), float("nan"))
    pool = torch.full((2, 4, 5, 6), float("nan"))
    out = spec.conv2d([a, b], w, bias, padding=1, act="relu", residual=res, out=buf[..., 2:8], pool_out=pool)
    ref = torch.relu(
        F.conv2d(torch.cat([a, b], 3).permute(0, 3, 1, 2), w, bias, padding=1) + res.permute(0, 3, 1, 2)
    )
    torch.testing.assert_close(out, nhwc(ref))
    torch.testing.assert_close(pool, nhwc(F.max_pool2d(ref, 2)))
    assert buf[..., :2].isnan().all() and buf[..., 8:].isnan().all()


def test_head_ops() -> None:
    x, w, b = torch.randn(2, 5, 6, 8), torch.randn(3, 8, 1, 1), torch.randn(3)
    logits = F.conv2d(x.permute(0, 3, 1, 2), w, b)
    torch.testing.assert_close(spec.head(x, w, b, "softmax"), nhwc(logits.softmax(1)))
    torch.testing.assert_close(spec.head(x, w, b, "sigmoid"), nhwc(logits.sigmoid()))
    assert torch.equal(spec.head(x, w, b, "argmax"), logits.argmax(1))


def test_conv_transpose2x2() -> None:
    x, w, b = torch.randn(2, 5, 7, 6), torch.randn(6, 4, 2, 2), torch.randn(4)
    ref = F.conv_transpose2d(x.permute(0, 3, 1, 2), w, b, stride=2)
    torch.testing.assert_close(spec.conv_transpose2x2(x, w, b), nhwc(ref))


def test_fold_bn_matches_module() -> None:
    conv = torch.nn.Conv2d(4, 6, 3, padding=1, bias=False)
    bn = torch.nn.BatchNorm2d(6).eval()
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
    w, b = fold_bn(conv.weight, None, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
    x = torch.randn(2, 4, 9, 9)
    torch.testing.assert_close(F.conv2d(x, w, b, padding=1), bn(conv(x)), rtol=1e-5, atol=1e-5)


def test_checks_say_what_was_expected() -> None:
    x = torch.randn(1, 8, 8, 3)
    w = torch.randn(4, 5, 3, 3)
    kw = dict(stride=1, padding=1, dilation=1, act="relu", residual=None, out=None, pool_out=None)
    with pytest.raises(ValueError, match="3 = 3 channels but the weight expects 5"):
        checks.check_conv2d([x], w, None, **kw)
    with pytest.raises(ValueError, match="channel stride 1"):
        checks.check_conv2d([x.permute(0, 3, 1, 2).contiguous().permute(0, 1, 3, 2)], w, None, **kw)
    with pytest.raises(ValueError, match=r"out has shape \(1, 8, 8, 3\), expected \(1, 8, 8, 4\)"):
        checks.check_conv2d([torch.randn(1, 8, 8, 5)], w, None, **{**kw, "out": torch.empty(1, 8, 8, 3)})
    with pytest.raises(ValueError, match=r"dtype torch\.float64"):
        checks.check_conv2d([x.double()], w, None, **kw)
    with pytest.raises(ValueError, match="unknown activation"):
        checks.check_conv2d([torch.randn(1, 8, 8, 5)], w, None, **{**kw, "act": "gelu"})
