"""The cpu backend runs profitable 3x3 convs by Winograd, within issue 8's accuracy budget; exact=True
refuses it; a call Winograd cannot take (stride 2) still runs, by direct convolution. The engine's choice is
the kernel registry's, read from the report's step records."""

import pytest
import torch

import unet_fast
from unet_fast.kernels import cpu, cpu_isa, cpu_winograd, spec
from unet_fast.models.weights import randomize_bn
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
    isa = cpu_isa.best().name
    convs = [s for s in fast.report_data().steps if s.kind == "Conv"]
    wino = [s for s in convs if s.kernel == f"cpu.conv2d.winograd.{isa}"]
    # the rule, written out: 3x3 stride 1 with >= 16 input channels (the stem, Cin 3, stays direct)
    assert len(wino) == len(convs) - 1 and wino[0].algorithm == "Winograd F(4x4,3x3)", [s.kernel for s in convs]
    assert "Winograd" not in exact.report()
    ex_convs = [s for s in exact.report_data().steps if s.kind == "Conv"]
    assert ex_convs and all(s.kernel == f"cpu.conv2d.direct.{isa}" for s in ex_convs)
    assert all(("cpu.conv2d.winograd." + isa, "exact=True: no approximate algorithm") in s.passed_over
               for s in ex_convs)  # fmt: skip
    with torch.no_grad():
        assert_parity(ref, fast(x), rel_l2=1e-4, min_agreement=0.999, what="cpu backend with Winograd")
        assert_parity(ref, exact(x), rel_l2=1e-5, min_agreement=0.999, what="cpu backend, exact=True")


@pytest.mark.parametrize("isa", cpu_isa.available_isas())
def test_report_names_the_kernel_variant_of_every_packed_step(isa: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The variant is chosen once, when optimize prepares the steps (here forced by UNET_FAST_KERNELS cpu=), and
    every step's record names it: the kernel that runs it is that variant's build, Winograd convs included; the
    text names it on every packed step (`[variant ...]` or in the algorithm)."""
    monkeypatch.setenv("UNET_FAST_KERNELS", f"cpu={isa}")
    model = randomize_bn(unet_fast.UNet(3, 2, 16, 2, "batch", "transpose", head="softmax")).eval()
    fast = unet_fast.optimize(model, torch.randn(1, 3, 32, 32), backend="cpu")
    steps = fast.report_data().steps
    assert steps and all(s.isa == isa and s.kernel.endswith(f".{isa}") for s in steps), [s.kernel for s in steps]
    assert {s.kind for s in steps} >= {"Conv", "ConvTranspose2x2", "Head"}
    assert any(s.kernel == f"cpu.conv2d.winograd.{isa}" for s in steps)
    assert fast.report_data().kernels_forced == f"cpu={isa}"
    text = fast.report()
    assert f"{len(steps)} steps run the {isa} build" in text
    lines = [ln for ln in text.splitlines() if any(f" {s.kind} " in ln and f" {s.name}:" in ln for s in steps)]
    assert len(lines) == len(steps) and all(isa in ln for ln in lines)


def test_legacy_isa_variable_still_forces_the_variant(monkeypatch: pytest.MonkeyPatch) -> None:
    """UNET_FAST_CPU_ISA, documented before UNET_FAST_KERNELS, is a deprecated alias of cpu=: it warns and forces."""
    isa = cpu_isa.available_isas()[0]
    monkeypatch.delenv("UNET_FAST_KERNELS", raising=False)
    monkeypatch.setenv(cpu_isa.ISA_ENV, isa)
    model = randomize_bn(unet_fast.UNet(3, 2, 8, 2, "batch", "transpose", head="softmax")).eval()
    with pytest.warns(DeprecationWarning, match="UNET_FAST_KERNELS=cpu="):
        fast = unet_fast.optimize(model, torch.randn(1, 3, 32, 32), backend="cpu")
    assert all(s.isa == isa for s in fast.report_data().steps)
    monkeypatch.setenv(cpu_isa.ISA_ENV, "sse9")
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="unknown CPU kernel isa 'sse9'"):
        unet_fast.optimize(model, torch.randn(1, 3, 32, 32), backend="cpu")
