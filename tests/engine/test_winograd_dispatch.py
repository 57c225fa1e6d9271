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


def _conv_out_sizes(model: torch.nn.Module, x: torch.Tensor) -> list[tuple[int, int]]:
    """The output (H, W) of every 3x3 Conv2d of `model` on `x`, in call order (the plan's Conv steps' order; the
    1x1 head is a Head step)."""
    sizes: list[tuple[int, int]] = []
    hooks = [m.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[2:])))
             for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]  # fmt: skip
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return sizes


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
    wino = [s for s in convs if s.kernel in (f"cpu.conv2d.winograd.{isa}", f"cpu.conv2d.winograd6.{isa}")]
    # the rule, written out: 3x3 stride 1 with >= 16 input channels (the stem, Cin 3, stays direct)
    assert len(wino) == len(convs) - 1 and wino[0].algorithm.startswith("Winograd F("), [s.kernel for s in convs]
    assert "Winograd" not in exact.report()
    ex_convs = [s for s in exact.report_data().steps if s.kind == "Conv"]
    assert ex_convs and all(s.kernel == f"cpu.conv2d.direct.{isa}" for s in ex_convs)
    assert all(any(k.startswith("cpu.conv2d.winograd") and r == "exact=True: no approximate algorithm"
                   for k, r in s.passed_over) for s in ex_convs)  # fmt: skip
    with torch.no_grad():
        assert_parity(ref, fast(x), rel_l2=1e-4, min_agreement=0.999, what="cpu backend with Winograd")
        assert_parity(ref, exact(x), rel_l2=1e-5, min_agreement=0.999, what="cpu backend, exact=True")


@pytest.mark.parametrize("hw", [(45, 61), (64, 64), (32, 48)])
def test_winograd_tile_follows_the_output_size(hw: tuple[int, int]) -> None:
    """Each 3x3 conv runs F(6x6, 3x3) where cpu_winograd.f6_decision takes its output size in this plan and
    F(4x4, 3x3) elsewhere (64x64 input: F(6x6) at 64 px, F(4x4) at 32, 16, 8 px); a second input size gets its
    own plan, chosen again; both within the Winograd budget of the float64 model."""
    torch.manual_seed(4)
    model = randomize_bn(unet_fast.UNet(3, 3, 16, 3, head="softmax")).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
            torch.nn.init.kaiming_normal_(m.weight)
    isa = cpu_isa.best().name
    fast = unet_fast.optimize(model, torch.randn(1, 3, 45, 61), backend="cpu")
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        got = fast(x)
        ref = model.double()(x.double()).float()
        model.float()
    sizes = _conv_out_sizes(model, x)
    convs = [s for s in fast.report_data().steps if s.kind == "Conv"]
    assert len(convs) == len(sizes) and fast.report_data().plan.shape == (2, *hw)
    expect = [f"cpu.conv2d.direct.{isa}"] + [
        f"cpu.conv2d.winograd6.{isa}" if not cpu_winograd.f6_decision(size) else f"cpu.conv2d.winograd.{isa}"
        for size in sizes[1:]
    ]
    assert [s.kernel for s in convs] == expect, sizes
    if hw == (64, 64):
        assert {s.algorithm for s in convs[1:]} == {"Winograd F(6x6,3x3)", "Winograd F(4x4,3x3)"}
    f4 = next((s for s in convs if s.kernel.startswith("cpu.conv2d.winograd.")), None)
    if f4 is not None:  # why F(6x6) was passed over: the size rule, named
        assert any(k.startswith("cpu.conv2d.winograd6.") and "F(4x4) is faster" in r for k, r in f4.passed_over)
    assert_parity(ref, got, rel_l2=1e-4, min_agreement=0.999, what=f"cpu backend with Winograd, {hw}")


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


@pytest.mark.parametrize(("size", "tile"), [((64, 64), 6), ((36, 37), 6), ((13, 11), 6), ((7, 6), 6), ((24, 25), 6),
                                            ((32, 32), 4), ((16, 16), 4), ((8, 8), 4), ((4, 4), 4), ((128, 40), 6),
                                            ((56, 56), 4), ((40, 40), 6), ((256, 256), 6), ((31, 33), 6), ((20, 20), 4)])  # fmt: skip
def test_f6_rule_written_out(size: tuple[int, int], tile: int) -> None:
    """The size rule as data: F(6x6) where its GEMM work, ceil(H/6) ceil(W/6) 64, is at most F6_MAX_WORK_RATIO
    of F(4x4)'s, ceil(H/4) ceil(W/4) 36 (whole edge tiles computed); each expectation worked out by hand."""
    h, w = size
    r = (-(-h // 6)) * (-(-w // 6)) * 64 / ((-(-h // 4)) * (-(-w // 4)) * 36)
    assert cpu_winograd.gemm_work_ratio(size) == pytest.approx(r)
    assert cpu_winograd.F6_MAX_WORK_RATIO == 0.9
    why = cpu_winograd.f6_decision(size)
    assert (why == "") == (tile == 6), (size, r, why)
    if tile == 4:
        assert f"{h}x{w}" in why and "F(4x4) is faster" in why


def _tiny_unet() -> torch.nn.Module:
    torch.manual_seed(5)
    model = randomize_bn(unet_fast.UNet(3, 3, 16, 3, head="softmax")).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
            torch.nn.init.kaiming_normal_(m.weight)
    return model


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("forced", ["4", "6", "auto"])
def test_kernels_env_forces_the_tile(forced: str, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    """UNET_FAST_KERNELS winograd=4 / 6 puts every Winograd conv of the plan on that tile (F(6x6) also where the
    size rule would not: the 32, 16 px layers here), names why the other was passed over, says it was forced,
    and keeps parity; auto follows the size rule. exact=True still refuses both tiles, forced or not."""
    monkeypatch.setenv("UNET_FAST_KERNELS", f"winograd={forced}")
    model = _tiny_unet()
    x = torch.randn(2, 3, 64, 64)
    fast = unet_fast.optimize(model, x, backend="cpu", dtype=dtype)
    isa = cpu_isa.best().name
    pre = "bf16_" if dtype == torch.bfloat16 else ""
    steps = fast.report_data().steps
    convs = [s for s in steps if s.kind == "Conv"]
    wino = [s for s in convs if ".winograd" in s.kernel or ".bf16_winograd" in s.kernel]
    sizes = _conv_out_sizes(model, x)
    assert len(wino) == len(convs) - 1 == len(sizes) - 1, [s.kernel for s in convs]
    if forced == "auto":
        want = [f"cpu.conv2d.{pre}winograd{'' if cpu_winograd.f6_decision(sz) else '6'}.{isa}" for sz in sizes[1:]]
        assert [s.kernel for s in wino] == want
        assert {s.kernel for s in wino} == {f"cpu.conv2d.{pre}winograd.{isa}", f"cpu.conv2d.{pre}winograd6.{isa}"}
        assert fast.report_data().kernels_forced == ""
    else:
        name = "winograd6" if forced == "6" else "winograd"
        other = "winograd" if forced == "6" else "winograd6"
        assert all(s.kernel == f"cpu.conv2d.{pre}{name}.{isa}" for s in wino), [s.kernel for s in wino]
        why = f"UNET_FAST_KERNELS winograd={forced}: F({forced}x{forced},3x3) only"
        if forced == "4":  # F(6x6) ranks above F(4x4): passed over, with the reason (winograd=6 never gets to F(4x4))
            assert all((f"cpu.conv2d.{pre}{other}.{isa}", why) in s.passed_over for s in wino), wino[0].passed_over
        else:
            assert not any(k.startswith(f"cpu.conv2d.{pre}{other}.") for s in wino for k, _ in s.passed_over)
        assert fast.report_data().kernels_forced == f"winograd={forced}"
        text = fast.report()
        assert f"F({forced}x{forced},3x3)" in text and ("F(6x6" in text) == (forced == "6"), text
    with torch.no_grad():
        ref = model.double()(x.double()).float()
        model.float()
        got = fast(x).float()
    bound = 1e-4 if dtype == torch.float32 else 3e-2  # issue 8's Winograd budget; bf16: storage rounding
    assert_parity(ref, got, rel_l2=bound, min_agreement=0.99, what=f"winograd={forced} {dtype}")
    exact = unet_fast.optimize(model, x, backend="cpu", exact=True)
    assert not any("winograd" in s.kernel for s in exact.report_data().steps)


def test_bad_tile_value_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNET_FAST_KERNELS", "winograd=8")
    with pytest.raises(ValueError, match="winograd must be one of auto, 4, 6, got '8'"):
        unet_fast.optimize(_tiny_unet(), torch.randn(1, 3, 32, 32), backend="cpu")
    with pytest.raises(ValueError, match="winograd must be one of"):
        unet_fast.optimize(_tiny_unet(), torch.randn(1, 3, 32, 32), backend="cpu", exact=True)


def test_each_plan_packs_its_own_tile() -> None:
    """One FusedUNet, two input sizes: a conv that runs F(6x6) in one plan (66 px output) and F(4x4) in the
    other (32 px) has one packed weight per tile (the weight store's key is the kernel, so the tile), each
    plan's own, and both plans keep parity."""
    model = _tiny_unet()
    fast = unet_fast.optimize(model, torch.randn(1, 3, 66, 66), backend="cpu")
    xs = [torch.randn(2, 3, 66, 66), torch.randn(1, 3, 32, 32)]
    with torch.no_grad():
        outs = [fast(x) for x in xs]
        refs = [model.double()(x.double()).float() for x in xs]
        model.float()
    for x, out, ref in zip(xs, outs, refs, strict=True):
        assert_parity(ref, out, rel_l2=1e-4, min_agreement=0.999, what=f"plan {tuple(x.shape)}")
    big, small = (fast.executor_for(tuple(x.shape)) for x in xs)
    first = next(i for i, p in enumerate(big.prepared) if p.kernel is not None and ".winograd" in p.kernel.name)
    assert big.prepared[first].weight.tile == 6 and small.prepared[first].weight.tile == 4
    assert big.prepared[first].step.name == small.prepared[first].step.name


@pytest.mark.parametrize("forced", ["", "winograd=4", "winograd=6"])
def test_info_names_the_tile(forced: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`unet-fast info` names the fp32 3x3 conv's kernel at a typical big (256 px) and small (32 px) output:
    F(6x6) and F(4x4) by the size rule, one tile where UNET_FAST_KERNELS winograd= forces it."""
    from unet_fast.info import collect

    monkeypatch.setenv("UNET_FAST_KERNELS", forced)
    isa = cpu_isa.best().name
    text = collect()["backends"]["cpu"]["kernels"]["fp32"]["conv3x3"]
    if not forced:
        assert text.startswith(f"at 256x256 output: Winograd F(6x6,3x3), {isa}; at 32x32 output: Winograd "
                               f"F(4x4,3x3), {isa} (not: output 32x32: F(6x6)'s GEMM work is 1.00x"), text  # fmt: skip
    elif forced == "winograd=4":
        assert text == f"Winograd F(4x4,3x3), {isa} (not: UNET_FAST_KERNELS winograd=4: F(4x4,3x3) only)", text
    else:
        assert text == f"Winograd F(6x6,3x3), {isa}", text


def _families() -> dict[str, tuple[object, tuple[int, int]]]:
    """The bench's model families at full width (bench.workloads, lively weights) and the stand-in for
    smp.Unet('resnet34') of the engine tests (segmentation_models_pytorch is optional), with the two input
    sizes of issue 25 (valid-padding unet-original at the nearest sizes it takes: 252 and 508)."""
    from engine_helpers import SmpLikeUnet

    from unet_fast.bench.workloads import get_workload
    from unet_fast.models.weights import lively_weights

    return {
        "unet64": (get_workload("unet64-256").build, (256, 512)),
        "unet-original": (get_workload("unet-original").build, (252, 508)),
        "unet-bilinear": (get_workload("unet-bilinear").build, (256, 512)),
        "smp-resnet34": (lambda: lively_weights(SmpLikeUnet("resnet34", 3, 2), 7), (256, 512)),
    }


@pytest.mark.slow
@pytest.mark.parametrize("family", ["unet64", "unet-original", "unet-bilinear", "smp-resnet34"])
def test_full_models_keep_the_fp32_budget_with_f6(family: str) -> None:
    """Issue 25's error target with F(6x6) in the plan: rel-L2 <= 1e-5 against PyTorch fp32 (argmax agreement
    >= 99.9%) per model at 256 and 512 px, every conv on the kernel the size rule names (F(6x6) on the big
    maps, F(4x4) where the output is 32 or 16 px), poisoned buffers."""
    from engine_helpers import check_parity

    build, sizes = _families()[family]
    model = build().eval()  # type: ignore[operator]
    isa = cpu_isa.best().name
    fast = unet_fast.optimize(model, torch.randn(1, model_in_channels(model), sizes[0], sizes[0]), backend="cpu")
    for s in sizes:
        x = torch.randn(1, model_in_channels(model), s, s, generator=torch.Generator().manual_seed(s))
        check_parity(model, fast, x, f"{family} at {s} px, cpu backend")
        ex = fast.executor_for(tuple(x.shape))
        bufs = {n: b.size for n, b in ex.plan.buffers.items()}
        wino = [(p, r) for p, r in zip(ex.prepared, ex.records(), strict=True) if ".winograd" in r.kernel]
        assert any(r.kernel == f"cpu.conv2d.winograd6.{isa}" for _, r in wino), f"no F(6x6) at {s} px"
        for p, r in wino:
            size = p.step.out.size or bufs[p.step.out.buffer]
            want = "winograd" if cpu_winograd.f6_decision(size) else "winograd6"
            assert r.kernel == f"cpu.conv2d.{want}.{isa}", (r.name, size, r.kernel)


def model_in_channels(model: torch.nn.Module) -> int:
    return next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d)).in_channels
