"""The CUDA ops against the PyTorch reference (kernels/spec.py).

GPU tests skip cleanly without a CUDA device; they poison every output buffer with NaN, write into channel
slots and check that nothing outside the slot changed, and cover fp32/fp16/bf16 with spec.TOLERANCES.
The CPU-only tests check what the launchers must do without a GPU: argument errors and weight packing.
(The kernels' index math is checked on the CPU by test_cuda_host_harness.py.)"""

from __future__ import annotations

import pytest
import torch
from cuda_testutil import (
    BATCHES,
    CHANNELS,
    DTYPES,
    NAN,
    SIZES,
    ConvCase,
    assert_close,
    assert_outside_slot_poisoned,
    async_cases,
    conv_cases,
    make_conv_run,
    round_to,
)

from unet_fast import _ext
from unet_fast.kernels import cuda, spec
from unet_fast.kernels.spec import ACTIVATIONS, HEAD_OPS, InputView, Resample

_no_gpu = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (none visible to torch)"
)


def requires_gpu(test):
    """Marked `gpu` (benchmarks/gpu/first_contact.py selects these with -m gpu) and skipped without a GPU."""
    return pytest.mark.gpu(_no_gpu(test))


SLOPE = 0.1


def dev() -> str:
    return "cuda"


def _ids(d: torch.dtype) -> str:
    return str(d).removeprefix("torch.")


# ---------------------------------------------------------------------------------------------------
# GPU: numerics
# ---------------------------------------------------------------------------------------------------


@requires_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("case", conv_cases(), ids=str)
def test_conv2d(case: ConvCase, dtype: torch.dtype) -> None:
    run = make_conv_run(case, dtype, dev())
    packed = cuda.pack_conv_weight(run.weight, dtype)
    got = cuda.conv2d(run.views, packed, run.bias, act=case.act, negative_slope=SLOPE, residual=run.residual,
                      out=run.out, pool_out=run.pool, **run.kw)  # fmt: skip
    assert got is run.out
    torch.cuda.synchronize()
    ref, ref_pool = run.reference(case.act, SLOPE)
    assert_close(run.out, ref, f"{case} out")
    assert_outside_slot_poisoned(run.out_buf, run.out, f"{case} out")
    if case.pool:
        assert_close(run.pool, ref_pool, f"{case} pool")
        assert_outside_slot_poisoned(run.pool_buf, run.pool, f"{case} pool")


@requires_gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=_ids)
@pytest.mark.parametrize("case", async_cases(), ids=str)
def test_conv2d_async_path(case: ConvCase, dtype: torch.dtype) -> None:
    """Aligned plain views: the tensor-core kernel's cp.async A path."""
    run = make_conv_run(case, dtype, dev(), aligned=True)
    _, args = cuda.conv2d_args(run.views, cuda.pack_conv_weight(run.weight, dtype), run.bias, act=case.act,
                               negative_slope=SLOPE, residual=run.residual, out=run.out, pool_out=run.pool,
                               **run.kw)  # fmt: skip
    with torch.cuda.device(run.out.device):
        variant = _ext.require_cuda().conv2d(*args, cuda.current_stream())
    assert variant.endswith("_async"), variant
    torch.cuda.synchronize()
    ref, ref_pool = run.reference(case.act, SLOPE)
    assert_close(run.out, ref, f"{case} out")
    assert_outside_slot_poisoned(run.out_buf, run.out, f"{case} out")
    if case.pool:
        assert_close(run.pool, ref_pool, f"{case} pool")


@requires_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("n,h,w,cin,cout", [(1, 17, 23, 5, 3), (3, 9, 13, 37, 37), (1, 8, 11, 16, 70)])
def test_conv_transpose2x2(dtype: torch.dtype, n, h, w, cin, cout) -> None:
    act = ACTIVATIONS[cin % len(ACTIVATIONS)]
    x = torch.randn(n, h, w, cin, device=dev()).to(dtype)
    wt = round_to(torch.randn(cin, cout, 2, 2) / cin**0.5, dtype).to(dev())
    bias = torch.randn(cout, device=dev())
    buf = torch.full((n, 2 * h, 2 * w, cout + 3), NAN, device=dev(), dtype=dtype)
    slot = buf[..., 2 : 2 + cout]
    cuda.conv_transpose2x2(x, cuda.pack_conv_transpose_weight(wt, dtype), bias, act=act, negative_slope=SLOPE,
                           out=slot)  # fmt: skip
    torch.cuda.synchronize()
    ref = spec.conv_transpose2x2(x.float().cpu(), wt.cpu(), bias.cpu(), act=act, negative_slope=SLOPE)
    assert_close(slot, ref, "conv_transpose2x2")
    assert_outside_slot_poisoned(buf, slot, "conv_transpose2x2")


@requires_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("hw", (*SIZES, (2, 2), (3, 5)))
@pytest.mark.parametrize("c", CHANNELS)
def test_maxpool2x2(dtype: torch.dtype, n: int, hw: tuple[int, int], c: int) -> None:
    h, w = hw
    xbuf = torch.randn(n, h, w, c + 2, device=dev()).to(dtype)
    x = xbuf[..., 1 : 1 + c]
    x[0, 0, 0, 0] = NAN  # NaN propagates, like F.max_pool2d
    buf = torch.full((n, h // 2, w // 2, c + 4), NAN, device=dev(), dtype=dtype)
    slot = buf[..., 3 : 3 + c]
    cuda.maxpool2x2(x, out=slot)
    torch.cuda.synchronize()
    ref = spec.maxpool2x2(x.float().cpu())
    got = slot.cpu().float()
    assert got[0, 0, 0, 0].isnan()
    got[0, 0, 0, 0] = ref[0, 0, 0, 0] = 0.0
    assert_close(got.to(dtype), ref, "maxpool2x2")
    assert_outside_slot_poisoned(buf, slot, "maxpool2x2")


def upsample_views(dtype: torch.dtype, n: int) -> list[InputView]:
    a = torch.randn(n, 9, 12, 7, device=dev()).to(dtype)[..., 1:6]
    b = torch.randn(n, 22, 28, 3, device=dev()).to(dtype)
    c = torch.randn(n, 8, 11, 37, device=dev()).to(dtype)
    return [
        InputView(a, Resample("bilinear", (18, 24), False)),
        InputView(a, Resample("bilinear", (18, 24), True)),
        InputView(b, offset=(2, 2), size=(18, 24)),  # centre crop
        InputView(c, Resample("nearest", (17, 23)), offset=(-1, 0), size=(18, 24)),  # F.pad-like window
    ]


@requires_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("n", BATCHES)
def test_upsample_concat(dtype: torch.dtype, n: int) -> None:
    views = upsample_views(dtype, n)
    c = sum(v.channels for v in views)
    buf = torch.full((n, 18, 24, c + 5), NAN, device=dev(), dtype=dtype)
    slot = buf[..., 2 : 2 + c]
    cuda.upsample_concat(views, out=slot)
    torch.cuda.synchronize()
    cpu_views = [InputView(v.tensor.float().cpu(), v.resample, v.offset, v.size) for v in views]
    assert_close(slot, spec.upsample_concat(cpu_views), "upsample_concat")
    assert_outside_slot_poisoned(buf, slot, "upsample_concat")


@requires_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("op", HEAD_OPS)
@pytest.mark.parametrize("k", [2, 5, 37])
def test_head(dtype: torch.dtype, op: str, k: int) -> None:
    n, c = 3, 37
    xbuf = torch.randn(n, 9, 12, c + 2, device=dev()).to(dtype)
    view = InputView(xbuf[..., 1 : 1 + c], Resample("bilinear", (17, 23), False))
    w = torch.randn(k, c, device=dev()) / c**0.5
    bias = torch.randn(k, device=dev())
    packed = cuda.pack_head_weight(w, dtype)
    ref = spec.head(InputView(view.tensor.float().cpu(), view.resample), w.cpu(), bias.cpu(), "logits")
    if op == "argmax":
        for out_dtype in (torch.uint8, torch.int32, torch.int64):
            out = torch.full((n, 17, 23), -1, device=dev(), dtype=out_dtype)
            cuda.head(view, packed, bias, op, out=out)
            torch.cuda.synchronize()
            top2 = ref.topk(2, dim=3).values if k > 1 else None
            clear = (top2[..., 0] - top2[..., 1]) > 1e-3  # near-ties may flip with summation order
            assert (out.cpu().long() == ref.argmax(3))[clear].all(), f"argmax into {out_dtype}"
        return
    buf = torch.full((n, 17, 23, k + 3), NAN, device=dev(), dtype=dtype)
    slot = buf[..., 1 : 1 + k]
    cuda.head(view, packed, bias, op, out=slot)
    torch.cuda.synchronize()
    expect = {"logits": ref, "softmax": ref.softmax(3), "sigmoid": ref.sigmoid()}[op]
    assert_close(slot, expect, f"head {op}")
    assert_outside_slot_poisoned(buf, slot, f"head {op}")


# ---------------------------------------------------------------------------------------------------
# CPU: packing and argument checks (no GPU needed)
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
def test_pack_conv_weight_layout(dtype: torch.dtype) -> None:
    w = torch.randn(7, 37, 3, 2)
    p = cuda.pack_conv_weight(w, dtype)
    assert p.shape == (7, 37, 3, 2) and p.dtype == dtype and p.data.is_contiguous()
    assert p.cin_pad % cuda.BLOCK_K[dtype] == 0 and p.cin_pad >= 37
    taps = p.data.float().reshape(7, 3, 2, p.cin_pad)
    torch.testing.assert_close(taps[..., :37], round_to(w, dtype).permute(0, 2, 3, 1))
    assert (taps[..., 37:] == 0).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
def test_pack_conv_weight_taps_packed_for_few_channels(dtype: torch.dtype) -> None:
    w = torch.randn(7, 3, 3, 3)
    p = cuda.pack_conv_weight(w, dtype)
    assert (
        p.taps_packed
        and p.cin_pad == 3
        and p.data.shape[1] == cuda.BLOCK_K[dtype] * -(-27 // cuda.BLOCK_K[dtype])
    )
    torch.testing.assert_close(p.data.float()[:, :27], round_to(w, dtype).permute(0, 2, 3, 1).reshape(7, 27))
    assert (p.data[:, 27:] == 0).all()
    assert not cuda.pack_conv_weight(torch.randn(7, 3, 1, 1), dtype).taps_packed  # one tap: nothing to pack


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
def test_pack_conv_transpose_weight_layout(dtype: torch.dtype) -> None:
    w = torch.randn(5, 6, 2, 2)
    p = cuda.pack_conv_transpose_weight(w, dtype)
    rows = p.data.float()
    assert rows.shape == (24, p.cin_pad)
    for a in range(2):
        for b in range(2):
            block = rows[(2 * a + b) * 6 : (2 * a + b + 1) * 6, :5]
            torch.testing.assert_close(block, round_to(w[:, :, a, b].t(), dtype))
    assert (rows[:, 5:] == 0).all()


def test_launchers_reject_bad_arguments() -> None:
    x = torch.randn(1, 8, 9, 4)
    packed = cuda.pack_conv_weight(torch.randn(6, 4, 3, 3), torch.float32)
    with pytest.raises(ValueError, match="CUDA tensors"):
        cuda.conv2d([x], packed, padding=1)
    with pytest.raises(ValueError, match="pack_conv_weight"):
        cuda.conv2d([x], torch.randn(6, 4, 3, 3), padding=1)
    with pytest.raises(ValueError, match="packed for"):
        cuda.conv2d_args([x.half()], packed, padding=1, require_device=False)
    with pytest.raises(ValueError, match="expects 4"):
        cuda.conv2d([x[..., :3]], packed, padding=1)
    with pytest.raises(ValueError, match="at most 4 inputs"):  # the registry keeps such steps off it
        five = [x[..., i : i + 1] for i in range(4)] + [x[..., :1]]
        cuda.conv2d_args(
            five, cuda.pack_conv_weight(torch.randn(6, 5, 1, 1), torch.float32), require_device=False
        )
    with pytest.raises(ValueError, match="float32"):
        cuda.conv2d_args([x], packed, torch.randn(6).double(), padding=1, require_device=False)
    with pytest.raises(ValueError, match="supports"):
        cuda.pack_conv_weight(torch.randn(6, 4, 3, 3), torch.float64)
    with pytest.raises(ValueError, match="dtype"):
        out = torch.empty(1, 8, 9, 6, dtype=torch.float16)
        cuda.conv2d_args([x], packed, padding=1, out=out, require_device=False)
    with pytest.raises(ValueError, match="CUDA tensors"):
        cuda.maxpool2x2(x)
    with pytest.raises(ValueError, match="2x2"):
        cuda.maxpool2x2(x[:, :1])
    with pytest.raises(ValueError, match="CUDA tensors"):
        cuda.upsample_concat([x, InputView(x, Resample("nearest", (8, 9)))])
    with pytest.raises(ValueError, match="pack_head_weight"):
        cuda.head(x, torch.randn(3, 4, 1, 1), None, "softmax")
    with pytest.raises(ValueError, match="at most 256 classes"):
        cuda.head(x, cuda.pack_head_weight(torch.randn(300, 4), torch.float32), None, "softmax")
    with pytest.raises(ValueError, match="CUDA tensors"):
        cuda.head(x, cuda.pack_head_weight(torch.randn(3, 4), torch.float32), None, "argmax")
    with pytest.raises(ValueError, match="pack_conv_transpose_weight"):
        cuda.conv_transpose2x2(x, torch.randn(4, 3, 2, 2))
    with pytest.raises(ValueError, match="CUDA tensors"):
        cuda.conv_transpose2x2(x, cuda.pack_conv_transpose_weight(torch.randn(4, 3, 2, 2), torch.float32))


def test_without_gpu_the_error_names_the_reason() -> None:
    """Valid arguments whose only problem is the missing GPU: a RuntimeError that says why."""
    if _ext.cuda_unavailable_reason() == "":
        pytest.skip("a CUDA device is usable here")
    with pytest.raises(RuntimeError, match="CUDA backend cannot run"):
        _ext.require_cuda()


def test_module_rechecks_what_could_write_out_of_bounds() -> None:
    """The C++ side re-validates the raw arguments before any launch (no GPU needed: nothing launches)."""
    ext = _ext.cuda_ext
    if ext is None:
        pytest.skip(f"the CUDA module is not built here: {_ext.cuda_unavailable_reason()}")
    x = torch.randn(1, 8, 9, 4)
    out = torch.empty(1, 8, 9, 6)
    packed = cuda.pack_conv_weight(torch.randn(6, 4, 3, 3), torch.float32)
    _, args = cuda.conv2d_args([x], packed, padding=1, out=out, require_device=False)
    code, views, wptr, bptr, res, outp, pool, geom, act, slope = args

    def call(**changes):
        a = dict(
            code=code, views=views, wptr=wptr, bptr=bptr, res=res, outp=outp, pool=pool, geom=geom, act=act
        )
        a.update(changes)
        return ext.conv2d(a["code"], a["views"], a["wptr"], a["bptr"], a["res"], a["outp"], a["pool"], a["geom"],
                          a["act"], slope, 0)  # fmt: skip

    bad_out_size = [*geom[:14], geom[14] + 1, *geom[15:]]
    with pytest.raises(ValueError, match="does not match the conv geometry"):
        call(geom=bad_out_size)
    with pytest.raises(ValueError, match="channels"):
        call(geom=[*geom[:3], 5, *geom[4:]])
    with pytest.raises(ValueError, match="cin_pad"):
        call(geom=[*geom[:4], 20, *geom[5:]])
    with pytest.raises(ValueError, match="17 integers"):
        call(geom=geom[:16])
    with pytest.raises(ValueError, match="1 to 4 views"):
        call(views=views * 5)
    with pytest.raises(ValueError, match="null pointer"):
        call(outp=[0, *outp[1:]])
    with pytest.raises(ValueError, match="activation"):
        call(act=7)
    with pytest.raises(ValueError, match="dtype"):
        call(code=5)
    with pytest.raises(ValueError, match="keeps its size"):
        call(views=[[*views[0][:8], 99, *views[0][9:]]])
    with pytest.raises(ValueError, match="pool input"):
        ext.maxpool2x2(0, x.data_ptr(), *x.stride()[:3], 1, 9, out.data_ptr(), *out.stride()[:3], 1, 4, 0)
    try:
        has_device = ext.device_count() > 0
    except RuntimeError:
        has_device = False
    if (
        not has_device
    ):  # valid arguments reach the launch; with no driver/device its CUDA error is a RuntimeError
        with pytest.raises(RuntimeError, match="cuda"):
            call()
