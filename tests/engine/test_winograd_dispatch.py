"""The cpu backend runs profitable 3x3 convs by Winograd, within issue 8's accuracy budget; exact=True
refuses it; a call Winograd cannot take (stride 2) still runs, by direct convolution."""

import re

import pytest
import torch

import unet_fast
from unet_fast.bench.workloads import randomize_bn
from unet_fast.kernels import cpu, cpu_isa, cpu_winograd, spec
from unet_fast.parity import assert_parity


def test_pack_chooses_winograd_only_where_profitable() -> None:
    """cpu_winograd.winograd_decision decides once, at pack time; the packed weight names its variant."""
    f32 = torch.float32
    wino = cpu.pack_conv_weight(torch.randn(8, 16, 3, 3), f32)
    assert wino.winograd is not None and wino.algorithm == f"Winograd F(4x4,3x3), {cpu_isa.best().name}"
    assert cpu.pack_conv_weight(torch.randn(8, 15, 3, 3), f32).winograd is None  # Cin < 16
    assert cpu.pack_conv_weight(torch.randn(8, 32, 1, 1), f32).winograd is None
    direct = cpu.pack_conv_weight(torch.randn(8, 16, 3, 3), f32, exact=True)
    assert direct.winograd is None and direct.algorithm == ""
    assert "exact=True" in cpu_winograd.winograd_decision((8, 16, 3, 3), exact=True)
    assert "input channels" in cpu_winograd.winograd_decision((8, 15, 3, 3))


@pytest.mark.parametrize("isa", cpu_isa.available_isas())
def test_isa_is_chosen_at_pack_time(isa: str) -> None:
    packed = cpu.pack_conv_weight(torch.randn(8, 16, 3, 3), torch.float32, isa=isa)
    assert packed.isa == isa and packed.winograd is not None and packed.winograd.isa == isa
    assert packed.algorithm.endswith(isa)


def test_winograd_weight_on_a_stride_2_call_runs_direct() -> None:
    x, w, b = torch.randn(2, 17, 23, 16), torch.randn(5, 16, 3, 3), torch.randn(5)
    packed = cpu.pack_conv_weight(w, torch.float32)
    assert not cpu_winograd.is_supported([x], packed.winograd, stride=2, padding=1)
    out = torch.full((2, 9, 12, 5), float("nan"))
    cpu.conv2d([x], packed, b, stride=2, padding=1, act="relu", out=out)
    torch.testing.assert_close(
        out, spec.conv2d([x], w, b, stride=2, padding=1, act="relu"), rtol=1e-4, atol=1e-4
    )


def test_engine_uses_winograd_and_exact_refuses_it() -> None:
    torch.manual_seed(3)
    model = randomize_bn(unet_fast.UNet(3, 3, 16, 3, head="softmax"))
    for m in model.modules():  # lively weights, so deep maps are not near-constant
        if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
            torch.nn.init.kaiming_normal_(m.weight)
    x = torch.randn(2, 3, 45, 61)
    with torch.no_grad():
        ref = model.double()(x.double()).float()
        model.float()
    fast = unet_fast.optimize(model, x, backend="cpu")
    exact = unet_fast.optimize(model, x, backend="cpu", exact=True)
    assert "convs by Winograd F(4x4,3x3)" in fast.report()
    assert "Winograd" not in exact.report()
    with torch.no_grad():
        assert_parity(ref, fast(x), rel_l2=1e-4, min_agreement=0.999, what="cpu backend with Winograd")
        assert_parity(ref, exact(x), rel_l2=1e-5, min_agreement=0.999, what="cpu backend, exact=True")


@pytest.mark.parametrize("isa", cpu_isa.available_isas())
def test_report_names_the_kernel_variant_of_every_packed_step(isa: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The variant is chosen once, when optimize packs the weights (here forced by UNET_FAST_CPU_ISA), and
    report() names it on every step that holds a packed weight: Winograd convs in their algorithm, the
    transposed convs and the head with `[variant ...]`."""
    monkeypatch.setenv(cpu_isa.ISA_ENV, isa)
    model = randomize_bn(unet_fast.UNet(3, 2, 16, 2, "batch", "transpose", head="softmax")).eval()
    fast = unet_fast.optimize(model, torch.randn(1, 3, 32, 32), backend="cpu")
    lines = fast.report().splitlines()
    steps = [ln for ln in lines if re.match(r"\s+\d+ \w", ln)]  # "  12 Head  head: ..."
    packed = [ln for ln in steps if any(k in ln for k in (" ConvTranspose2x2 ", " Head "))]
    assert packed and all(f"[variant {isa}]" in ln for ln in packed)
    assert any(f"Winograd F(4x4,3x3), {isa})" in ln for ln in steps)
    assert any(ln.startswith("  kernel variant: ") and f"the {isa} build" in ln for ln in lines)
    others = {v for v in cpu_isa.available_isas() if v != isa}
    assert not any(f"[variant {v}]" in ln or f"F(4x4,3x3), {v})" in ln for ln in steps for v in others)
