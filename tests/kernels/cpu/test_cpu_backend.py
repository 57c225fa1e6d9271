"""The cpu kernel module as a backend: the spec.py interface, thread count, and the C++ bounds re-checks
(a launcher bug must become a ValueError, never an out-of-bounds write)."""

import inspect

import pytest
import torch
from cpu_testutil import conv_weight

from unet_fast._ext import require_cpu
from unet_fast.kernels import cpu, cpu_isa, cpu_winograd, spec
from unet_fast.kernels.spec import InputView, Resample

INTERFACE = ("pack_conv_weight", "conv2d", "pack_conv_transpose_weight", "conv_transpose2x2",
             "upsample_concat", "maxpool2x2", "pack_head_weight", "head")  # fmt: skip


@pytest.mark.parametrize("name", INTERFACE)
def test_backend_interface_matches_spec(name: str) -> None:
    ours, ref = inspect.signature(getattr(cpu, name)), inspect.signature(getattr(spec, name))
    # A backend may add keyword-only options with defaults (pack_conv_weight's `exact`); spec's must match.
    kw_only = inspect.Parameter.KEYWORD_ONLY
    extra = [p for n, p in ours.parameters.items() if p.kind == kw_only and n not in ref.parameters]
    assert all(p.default is not p.empty for p in extra), extra
    shared = [p for p in ours.parameters.values() if p not in extra]
    assert len(shared) == len(ref.parameters)
    for a, b in zip(shared, ref.parameters.values(), strict=True):
        assert a.kind == b.kind, f"{name}: {a} vs {b}"
        if a.kind == inspect.Parameter.KEYWORD_ONLY:
            assert a.name == b.name and a.default == b.default, f"{name}: {a} vs {b}"


def test_supported_dtypes_are_the_only_ones_packed() -> None:
    # the cpu backend runs fp32 and bf16 (the bf16 kernels are the registry's: tile conv / head, bf16 Winograd);
    # this module's launchers are fp32 and refuse other dtypes instead of reading them as fp32
    from unet_fast.backends import BACKENDS
    from unet_fast.graph.ir import Conv, Head
    from unet_fast.kernels import cpu_bf16, cpu_bf16_ops, registry

    assert BACKENDS["cpu"].supported_dtypes() == (torch.float32, torch.bfloat16)
    with pytest.raises(ValueError, match="float32"):
        cpu.pack_head_weight(torch.randn(2, 3), torch.float16)
    with pytest.raises(ValueError, match="float32"):
        cpu.pack_head_weight(torch.randn(2, 3), torch.bfloat16)
    with pytest.raises(ValueError, match="float32"):
        cpu.pack_conv_weight(torch.randn(2, 3, 3, 3), torch.float16)
    tiles = [k for k in registry.kernels("cpu", Head, torch.bfloat16) if k.family == "bf16"]
    convs = [k for k in registry.kernels("cpu", Conv, torch.bfloat16) if k.family == "bf16"]
    assert tiles and convs
    assert all(isinstance(k.pack(torch.randn(2, 3), torch.bfloat16), cpu_bf16_ops.HeadWeightBF16) for k in tiles)
    assert all(isinstance(k.pack(torch.randn(2, 3, 3, 3), torch.bfloat16), cpu_bf16.ConvWeightBF16) for k in convs)


def test_threads_follow_torch_and_results_do_not_depend_on_them() -> None:
    x = torch.randn(3, 17, 23, 5)
    up = InputView(torch.randn(3, 9, 12, 3), Resample("bilinear", (18, 24), False), size=(17, 23))
    w = cpu.pack_conv_weight(conv_weight(6, 8, 3, 3), torch.float32)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            assert cpu.num_threads() == threads
            pool = torch.empty(3, 8, 11, 6)
            out = cpu.conv2d([up, x], w, torch.randn(6, generator=torch.Generator().manual_seed(1)),
                             padding=1, act="silu", pool_out=pool)  # fmt: skip
            results.append((out, pool, cpu.upsample_concat([up, x]), cpu.maxpool2x2(x)))
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            assert torch.equal(a, b)


def test_cpu_device_required() -> None:
    x = torch.empty(1, 4, 4, 3, device="meta")
    with pytest.raises(ValueError, match="CPU tensors"):
        cpu.maxpool2x2(x)


def _desc(t: torch.Tensor, **override: int) -> tuple[int, ...]:
    d = dict(zip(("ptr", "n", "h", "w", "c", "sn", "sh", "sw", "extent"), cpu._desc(t), strict=True))
    d.update(override)
    return tuple(d.values())


def test_cpp_rechecks_bounds() -> None:
    """The raw ops refuse descriptors that would address memory outside the tensor's storage."""
    ext = require_cpu()
    x, out = torch.randn(1, 4, 4, 3), torch.empty(1, 2, 2, 3)
    with pytest.raises(ValueError, match="storage holds"):
        ext.maxpool2x2_f32(_desc(x), _desc(out, extent=11), 1, 0)
    with pytest.raises(ValueError, match="storage holds"):
        ext.maxpool2x2_f32(_desc(x, h=6), _desc(out), 1, 0)
    with pytest.raises(ValueError, match="out must be"):
        ext.maxpool2x2_f32(_desc(x), _desc(torch.empty(1, 2, 3, 3)), 1, 0)
    with pytest.raises(ValueError, match=r"overlaps its rows"):
        ext.maxpool2x2_f32(_desc(x), _desc(out, sh=0), 1, 0)
    with pytest.raises(ValueError, match="unknown CPU kernel variant index"):
        ext.maxpool2x2_f32(_desc(x), _desc(out), 1, 99)
    acc = torch.randn(1, 4, 4, 3)
    with pytest.raises(ValueError, match="pool_out must be"):
        ext.conv_epilogue_f32(_desc(acc), 0, None, _desc(torch.empty(1, 4, 4, 3)),
                              _desc(torch.empty(1, 3, 2, 3)), 0, 0.0, 1)  # fmt: skip
    ct = cpu.pack_conv_transpose_weight(torch.randn(3, 5, 2, 2), torch.float32)
    panels, ct_isa = ct.panels, cpu_isa.isa_index(ct.isa)
    with pytest.raises(ValueError, match="out must be"):
        ext.conv_transpose2x2_f32(_desc(acc), panels.data_ptr(), panels.numel(), 5, 0,
                                  _desc(torch.empty(1, 8, 8, 3)), 0, 0.0, 1, ct_isa)  # fmt: skip
    with pytest.raises(ValueError, match="packed weight holds"):  # a weight for fewer input channels
        ext.conv_transpose2x2_f32(_desc(acc), panels.data_ptr(), panels.numel() // 3, 5, 0,
                                  _desc(torch.empty(1, 8, 8, 5)), 0, 0.0, 1, ct_isa)  # fmt: skip
    with pytest.raises(ValueError, match="dst must have"):
        ext.gather_view_f32(_desc(x), _desc(torch.empty(1, 4, 4, 2)), 0, 4, 4, False, 0, 0, 1, 0)
    with pytest.raises(ValueError, match="out must be"):
        ext.head_f32(_desc(x), torch.randn(2, 3).data_ptr(), 0, 2, 1, _desc(torch.empty(1, 4, 4, 3)), 0, 1, 0)


def test_cpp_rechecks_winograd_views_out_residual_pool() -> None:
    """The Winograd binding takes bounds-checked descriptors for every tensor: a view, out, residual or pool
    that lies outside its storage or has the wrong shape is a ValueError, not an out-of-bounds access."""
    ext = require_cpu()
    x, wt = torch.randn(1, 8, 8, 16), torch.randn(4, 16, 3, 3)
    packed = cpu_winograd.pack_winograd_weight(wt)
    isa, u = cpu_isa.isa_index(packed.isa), packed.data
    cout_pad = u.shape[1] * packed.nr

    y = torch.empty(1, 8, 8, 4)  # held in a name: the valid call writes into it

    def call(view=None, out=None, residual=None, pool=None, u_numel=None, nr=None):
        view = view or _desc(x)
        out = out or _desc(y)
        ext.winograd_conv3x3_f32([(view, 0, 8, 8, False, 0, 0)], 8, 8, 16, 4, cout_pad, 1, u.data_ptr(),
                                 u_numel or u.numel(), 0, residual, out, pool, 0, 0.0, 1, isa, 0, 0, packed.tile,
                                 packed.nr if nr is None else nr)  # fmt: skip

    call()  # the valid call runs
    torch.testing.assert_close(y, spec.conv2d([x], wt, None, padding=1), atol=1e-4, rtol=1e-4)
    # Cout 4 packs in one-vector blocks (cpu_winograd.winograd_nr); any other block width is refused
    with pytest.raises(ValueError, match="nr must be this variant's Winograd block"):
        call(nr=3)
    with pytest.raises(ValueError, match=r"cout_pad \d+ must be 4 rounded up"):
        call(nr=0)  # 0: the variant's two-vector block, which the one-vector cout_pad does not fit
    with pytest.raises(ValueError, match=r"views\[0\] addresses element .* storage holds"):
        call(view=_desc(x, extent=100))
    with pytest.raises(ValueError, match="out must be"):
        call(out=_desc(torch.empty(1, 8, 7, 4)))
    with pytest.raises(ValueError, match="storage holds"):
        call(out=_desc(torch.empty(1, 8, 8, 4), extent=200))
    with pytest.raises(ValueError, match="residual and out shapes differ"):
        call(residual=_desc(torch.empty(1, 8, 8, 3)))
    with pytest.raises(ValueError, match="storage holds"):
        call(residual=_desc(torch.empty(1, 8, 8, 4), extent=10))
    with pytest.raises(ValueError, match="pool_out must be"):
        call(pool=_desc(torch.empty(1, 4, 3, 4)))
    with pytest.raises(ValueError, match="packed weight holds"):
        call(u_numel=u.numel() - 1)
    with pytest.raises(ValueError, match="views carry"):
        call(view=_desc(torch.randn(1, 8, 8, 12)))


def test_fp32_outputs_that_overlap_their_inputs_are_refused() -> None:
    """Winograd and the C++ passes read inputs while other threads write outputs: an out sharing elements with
    an input is a ValueError (before any work), for the direct and the Winograd conv, the transposed conv, the
    pool, the gather and the head. Channel slots of one buffer stay allowed, and residual may be out itself."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 6, 6, 8, generator=g)
    for exact in (True, False):  # direct, Winograd
        w = cpu.pack_conv_weight(conv_weight(8, 8, 3, 3), torch.float32, exact=exact)
        with pytest.raises(ValueError, match=r"out overlaps inputs\[0\]"):
            cpu.conv2d([x], w, padding=1, out=x)
        r = torch.randn(1, 6, 6, 8, generator=g)
        y = cpu.conv2d([x.clone()], w, padding=1, residual=r, out=r)  # in place on the residual: fine
        assert y.data_ptr() == r.data_ptr() and torch.isfinite(y).all()
        big = torch.randn(1, 6, 6, 16, generator=g)
        with pytest.raises(ValueError, match="pool_out overlaps inputs"):
            cpu.conv2d([big[..., :8]], w, padding=1, out=torch.empty(1, 6, 6, 8), pool_out=big[:, :3, :3, :8])
        cpu.conv2d([big[..., :8]], w, padding=1, out=big[..., 8:])  # the other channel slot: fine
    m = torch.randn(1, 4, 4, 3, generator=g)
    with pytest.raises(ValueError, match="out overlaps x"):
        cpu.maxpool2x2(m, out=m[:, :2, :2])
    c = torch.randn(1, 4, 4, 6, generator=g)
    with pytest.raises(ValueError, match=r"out overlaps inputs\[0\]"):
        cpu.upsample_concat([c[..., :3], c[..., 3:]], out=c)
    wt = cpu.pack_conv_transpose_weight(torch.randn(8, 8, 2, 2, generator=g), torch.float32)
    t = torch.randn(1, 12, 12, 8, generator=g)
    with pytest.raises(ValueError, match="out overlaps x"):
        cpu.conv_transpose2x2(t[:, :6, :6], wt, out=t)


# The refusal of a pool_out that overlaps out, on every conv path (fp32 direct and Winograd, bf16 tiles and
# Winograd, fp32 over bf16): tests/kernels/conformance/test_conformance_conv2d.py, per registered kernel.
