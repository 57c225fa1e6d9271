"""spec.conv2d conformance: every registered Conv kernel (kernels/registry.py) x dtype x runnable ISA, on the
shared conv cases (tests/kernels/conv_cases.py) plus wide ones the Winograd kernels take, each compared with the
fp32 spec.conv2d reference on the same rounded inputs and weights (spec.TOLERANCES), outputs in poisoned
channel slots. And the CPU conv kernels' refusal of outputs that overlap (before any work)."""

from __future__ import annotations

import kernel_testutil as ku
import pytest
import torch
from conformance_util import device_of, kernels_of, params
from conv_cases import BATCHES, ConvCase, conv_cases, make_conv_run, plain

from unet_fast.graph.ir import Conv, Slice
from unet_fast.kernels import registry
from unet_fast.kernels.spec import Resample

SLOPE = 0.1


def _cases() -> list[ConvCase]:
    # the shared cases, the size/batch/channel matrix thinned to a quarter (it is walked in full by the per-backend
    # tests), plus convs with >= 16 input channels (what the Winograd kernels take) with every fusion
    shared = [c for i, c in enumerate(conv_cases()) if not c.name.startswith(tuple(f"n{n}-" for n in BATCHES)) or i % 4 == 0]
    up = (16, (9, 12), Resample("bilinear", (18, 24), False), (0, 0), None)
    skip = (24, (22, 28), None, (2, 2), (18, 24))
    near = (16, (9, 12), Resample("nearest", (18, 24)), (0, 0), None)
    padded = (16, (15, 21), None, (-1, -2), (17, 23))
    wide = [
        ConvCase("wide-concat-bilinear-pool", 2, (18, 24), (up, skip), 20, kw={"padding": 1}, pool=True),
        ConvCase("wide-concat-nearest-residual", 2, (18, 24), (near, skip), 33, kw={"padding": 1}, act="silu",
                 residual=True),
        ConvCase("wide-padded-valid", 1, (17, 23), (padded,), 7, act="leaky_relu"),
        ConvCase("wide-stride2", 2, (17, 23), (plain(24, (17, 23)),), 9, kw={"padding": 1, "stride": 2}),
    ]
    return shared + wide


CASES = _cases()


def _pair(v: object) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)  # type: ignore[return-value]


def _step(case: ConvCase) -> Conv:
    """The plan step of a case (what `supports` judges): its views as slices, its geometry and fusions."""
    inputs = [Slice(f"in{i}", 0, c, resample, offset, window) for i, (c, _, resample, offset, window)
              in enumerate(case.parts)]  # fmt: skip
    cin = sum(p[0] for p in case.parts)
    kw = case.kw
    return Conv(case.name, inputs, torch.zeros(case.cout, cin, *case.kernel), None, _pair(kw.get("stride", 1)),
                _pair(kw.get("padding", 0)), _pair(kw.get("dilation", 1)), case.act, SLOPE,
                Slice("out", 3, case.cout), Slice("pool", 1, case.cout) if case.pool else None,
                Slice("res", 0, case.cout) if case.residual else None)  # fmt: skip


def _small(case: ConvCase) -> bool:
    return case.name in ("n1-17x23-c3-o5-none", "concat-bilinear-ac0", "stride2") or case.name.startswith("wide-padded")


PARAMS = params(Conv, CASES, _step, _small)


def test_every_runnable_cpu_conv_kernel_is_parametrised() -> None:
    names = {p.values[0] for p in PARAMS}
    cpu = [k.name for k in kernels_of(Conv) if k.backend == "cpu"]
    assert cpu and set(cpu) <= names, sorted(set(cpu) - names)


@pytest.mark.parametrize(("kernel", "dtype", "case"), PARAMS)
def test_conv2d_matches_the_reference(kernel: str, dtype: torch.dtype, case: ConvCase) -> None:
    k = registry.get(kernel)
    run = make_conv_run(case, dtype, device_of(k))
    packed = k.pack(run.weight, dtype) if k.pack is not None else run.weight
    got = k.run(run.views, packed, run.bias, act=case.act, negative_slope=SLOPE, residual=run.residual,
                out=run.out, pool_out=run.pool, **run.kw)  # fmt: skip
    assert got.data_ptr() == run.out.data_ptr()
    ref, ref_pool = run.reference(case.act, SLOPE)
    what = f"{kernel} {dtype} {case}"
    ku.assert_close(run.out, ref, what, dtype=dtype)
    ku.assert_slot_only(run.out_buf, 3, 3 + case.cout, what)
    if run.pool is not None:
        ku.assert_close(run.pool, ref_pool, f"{what} pool_out", dtype=dtype)
        ku.assert_slot_only(run.pool_buf, 1, 1 + case.cout, f"{what} pool_out")


def _cpu_conv_kernels(dtype: torch.dtype) -> list[str]:
    # a 3x3 stride-1 conv with >= 16 input channels and a pool output: every CPU conv kernel takes it
    step = Conv("overlap", [Slice("x", 0, 16)], torch.zeros(8, 16, 3, 3), None, (1, 1), (1, 1), (1, 1), "relu", SLOPE,
                Slice("out", 0, 8), Slice("pool", 0, 8))  # fmt: skip
    return [k.name for k in kernels_of(Conv) if k.backend == "cpu" and dtype in k.dtypes and k.supports(step, dtype) is None]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_cpu_conv_kernels_refuse_overlapping_outputs(dtype: torch.dtype) -> None:
    """out and pool_out are both written, by different threads, while inputs are read: an output sharing elements
    with an input or with the other output is a ValueError before any work, on every CPU conv kernel (direct,
    Winograd, bf16 tiles / direct, bf16 Winograd, fp32 over bf16); residual may be out itself; disjoint channel
    slots of one buffer stay allowed (but on the bf16 tile conv, which refuses any shared byte span of out and
    pool_out)."""
    names = _cpu_conv_kernels(dtype)
    assert any(".winograd." in n or ".bf16_winograd." in n for n in names) and len(names) >= 2, names
    g = torch.Generator().manual_seed(4)
    w = torch.randn(8, 16, 3, 3, generator=g) / 12
    for name in names:
        k = registry.get(name)
        packed = k.pack(w, dtype)
        x = torch.randn(2, 6, 6, 16, generator=g).to(dtype)
        buf = torch.full((2, 6, 6, 16), float("nan"), dtype=dtype)
        with pytest.raises(ValueError, match="pool_out overlaps out"):
            k.run([x], packed, padding=(1, 1), out=buf[..., :8], pool_out=buf[:, :3, :3, :8])
        assert buf.isnan().all(), f"{name}: refused after writing"
        with pytest.raises(ValueError, match=r"out overlaps (inputs\[0\]|input view 0)"):
            k.run([x[..., :16]], packed, padding=(1, 1), out=x[..., :8])
        big = torch.randn(2, 6, 6, 24, generator=g).to(dtype)
        with pytest.raises(ValueError, match=r"pool_out overlaps (inputs|input view)"):
            k.run([big[..., :16]], packed, padding=(1, 1), out=torch.empty(2, 6, 6, 8, dtype=dtype),
                  pool_out=big[:, :3, :3, :8])  # fmt: skip
        r = torch.randn(2, 6, 6, 8, generator=g).to(dtype)
        y = k.run([x.clone()], packed, padding=(1, 1), residual=r, out=r)  # in place on the residual: fine
        assert y.data_ptr() == r.data_ptr() and torch.isfinite(y.float()).all(), name
        k.run([big[..., :16]], packed, padding=(1, 1), out=big[..., 16:])  # the other channel slot: fine
        if ".bf16_tiles." in name or ".bf16_direct." in name:
            continue  # the tile conv refuses any shared byte span of out and pool_out (cpu_bf16._overlaps)
        out, pool_out = buf[..., :8], buf[:, :3, :3, 8:]  # disjoint channel slots of one buffer: fine
        k.run([x], packed, padding=(1, 1), act="relu", out=out, pool_out=pool_out)
        expect = torch.nn.functional.max_pool2d(out.float().permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
        assert torch.equal(pool_out.float(), expect), name
