"""The roofline model against numbers computed by hand (fp32: 4 bytes per element)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unet_fast.bench.roofline import (
    SPEC_DEVICES,
    Device,
    floor_seconds,
    measure_cpu,
    roofline,
    spec_device,
)
from unet_fast.models import UNet

TOY = Device("toy", peak_flops=1000.0, bandwidth=100.0, source="test")


def conv_bn_relu_pool() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3), nn.ReLU(),
                         nn.MaxPool2d(2)).eval()  # fmt: skip


def test_conv_bn_relu_pool_by_hand() -> None:
    # input 1x2x4x4 (32 el), conv 3x3 2->3 same padding: output 1x3x4x4 (48 el), weight 54 el, no bias.
    r = roofline(conv_bn_relu_pool(), torch.randn(1, 2, 4, 4), devices=[TOY], use_plan=False)
    # Unfused: conv (2*48*18 = 1728 FLOPs; reads 32+54 el, writes 48), BN (2/el = 96; reads 48 + 4 params
    # of 3, writes 48), ReLU (48; reads 48, writes 48), pool (3 compares x 12 outputs = 36; reads 48, writes 12).
    assert [s.flops for s in r.unfused] == [1728, 96, 48, 36]
    assert [s.bytes_read for s in r.unfused] == [4 * 86, 4 * 60, 4 * 48, 4 * 48]
    assert [s.bytes_written for s in r.unfused] == [4 * 48, 4 * 48, 4 * 48, 4 * 12]
    # Fused: one step. BN folds into the weights plus a new bias (48 adds, 3 bias reads); ReLU 48; pool 36.
    # Reads input 32 + weight 54 + bias 3; the pre-pool output has no other reader: only the 12 pooled
    # values are written.
    (f,) = r.fused
    assert f.flops == 1728 + 48 + 48 + 36
    assert f.bytes_read == 4 * (32 + 54 + 3) and f.bytes_written == 4 * 12
    s = r.summary()
    assert s["unfused_bytes"] == 1592 and s["fused_bytes"] == 404 and s["bytes_saved"] == 1188
    # Floors on the toy device (1000 FLOP/s, 100 B/s): every step is memory-bound here.
    d = s["devices"][0]
    assert d["unfused_floor_ms"] == pytest.approx((536 + 432 + 384 + 240) / 100 * 1e3)
    assert d["fused_floor_ms"] == pytest.approx(404 / 100 * 1e3)
    assert d["fused_memory_bound_ms"] == pytest.approx(4040.0) and d["fused_compute_bound_ms"] == 0


def test_compute_bound_floor() -> None:
    r = roofline(conv_bn_relu_pool(), torch.randn(1, 2, 4, 4), use_plan=False)
    fast_memory = Device("compute-bound", peak_flops=100.0, bandwidth=1e9, source="test")
    total, compute, memory = floor_seconds(r.fused, fast_memory)
    assert total == pytest.approx(1860 / 100) and compute == pytest.approx(total)
    assert memory == pytest.approx(0.0)
    assert floor_seconds(r.unfused, fast_memory)[0] == pytest.approx(1908 / 100)


class SkipUpCat(nn.Module):
    """conv 1x1 -> (skip) and pool -> bilinear up x2 -> cat[skip, up] -> conv 1x1."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 1, 1, bias=False)
        self.b = nn.Conv2d(2, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.a(x)
        u = F.interpolate(F.max_pool2d(s, 2), scale_factor=2, mode="bilinear", align_corners=False)
        return self.b(torch.cat([s, u], dim=1))


def test_concat_and_upsample_are_read_on_the_fly() -> None:
    r = roofline(SkipUpCat().eval(), torch.randn(1, 1, 4, 4), use_plan=False)
    # Unfused (element counts): conv a 16+1 -> 16 (32 FLOPs); pool 16 -> 4 (12); bilinear 4 -> 16
    # (7 x 16 = 112); cat 16+16 -> 32 (0); conv b 32+2 -> 16 (2 x 16 x 2 = 64).
    assert sum(s.flops for s in r.unfused) == 32 + 12 + 112 + 0 + 64
    assert sum(s.bytes for s in r.unfused) == 4 * (17 + 16 + 16 + 4 + 4 + 16 + 32 + 32 + 34 + 16)
    # Fused: step A = conv a + pool; s has a second reader (the concat) so it is written, and so is the
    # pooled map. Step B = conv b reading s (16) and the *pooled* map through the upsample (4) + weight 2,
    # paying the 112 interpolation FLOPs; the upsampled and concatenated tensors never exist.
    assert r.fused == r.target and r.fused_source.startswith("analytic")
    a, b = r.target
    assert (a.flops, a.bytes_read, a.bytes_written) == (32 + 12, 4 * 17, 4 * (16 + 4))
    assert (b.flops, b.bytes_read, b.bytes_written) == (64 + 112, 4 * (16 + 4 + 2), 4 * 16)


def test_engine_plan_costs_by_hand() -> None:
    """The same conv+BN+ReLU+pool costed from the engine's Plan: one Conv step that, unlike the analytic
    target, also writes its pre-pool output (the Plan always writes `out`): 48 + 12 elements."""
    r = roofline(conv_bn_relu_pool(), torch.randn(1, 2, 4, 4), devices=[TOY])
    if not r.fused_source.startswith("the engine's Plan"):
        pytest.skip(f"the engine's Plan cannot be built in this checkout: {r.fused_source}")
    (f,) = r.fused
    assert f.kind == "conv" and f.flops == 1728 + 48 + 48 + 36
    assert f.bytes_read == 4 * (32 + 54 + 3) and f.bytes_written == 4 * (48 + 12)
    assert r.summary()["devices"][0]["fused_floor_ms"] == pytest.approx(4 * (89 + 60) / 100 * 1e3)


def test_unet_conv_flops_match_module_hooks_and_fusion_saves_bytes() -> None:
    """Independent check: 2 x MACs counted by forward hooks on every conv module."""
    model = UNet(3, 2, 8, 2, "batch", "transpose", head="softmax").eval()
    x = torch.randn(2, 3, 20, 28)
    macs, bias_adds = [], []

    def hook(m: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        k = m.weight.shape[2] * m.weight.shape[3]
        if isinstance(m, nn.ConvTranspose2d):
            macs.append(inp[0].numel() * m.out_channels * k)
        else:
            macs.append(out.numel() * m.in_channels * k)
        bias_adds.append(out.numel() if m.bias is not None else 0)

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))
    ]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    r = roofline(model, x, use_plan=False)
    conv_flops = sum(s.flops for s in r.unfused if s.kind == "convolution")
    assert len(macs) == 13 and conv_flops == 2 * sum(macs) + sum(bias_adds)
    s = r.summary()
    assert s["fused_steps"] < s["unfused_steps"]
    assert 0 < s["fused_bytes"] < s["unfused_bytes"]
    assert s["fused_flops"] <= s["unfused_flops"]  # BN's 2 FLOPs/element vanish into the folded bias
    fused_kinds = {k for st in r.fused for k in st.fused}
    assert {"bn", "relu", "pool", "softmax"} <= fused_kinds
    assert all(st.kind == "conv" for st in r.fused)  # cat and the transposed conv's slot need no own step


def test_devices_are_labelled() -> None:
    d = measure_cpu(n=128, copy_mib=4, repeats=1)
    assert d.source == "measured" and d.peak_flops > 0 and d.bandwidth > 0 and math.isfinite(d.peak_flops)
    h100 = spec_device("H100-SXM5", torch.float16)
    assert h100.source == "model, spec sheet" and h100.peak_flops == 989e12 and h100.bandwidth == 3.35e12
    assert spec_device("A100-SXM4-80GB", torch.bfloat16).peak_flops == 312e12
    assert set(SPEC_DEVICES) == {"A100-SXM4-80GB", "H100-SXM5"}


def test_markdown_names_devices_and_savings() -> None:
    r = roofline(
        conv_bn_relu_pool(), torch.randn(1, 2, 4, 4), devices=[TOY, spec_device("H100-SXM5", torch.float32)]
    )
    md = r.markdown()
    assert "model, spec sheet" in md and "the fusions save" in md and "memory-bound" in md
