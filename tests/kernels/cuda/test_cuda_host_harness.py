"""The CUDA ops' index math, checked on the CPU: conv_tiles_harness.cpp (compiled here with g++) runs the
kernels' tile decomposition, im2col view addressing, B-tile offsets and epilogue mapping (the same header
functions, the same per-thread split, the same ConvParams as the module builds) on the arguments that
unet_fast.kernels.cuda would pass to the GPU, and the result is compared with spec.conv2d. This is what
catches indexing bugs of the CUDA kernels on machines without a GPU (the multiply itself is a plain loop).
The per-element bodies of maxpool2x2, upsample_concat and head (cuda_elementwise.h) are run the same way."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from cuda_testutil import (
    NAN,
    ConvCase,
    assert_close,
    assert_outside_slot_poisoned,
    async_cases,
    conv_cases,
    make_conv_run,
    round_to,
)

from unet_fast.kernels import cuda, spec
from unet_fast.kernels.spec import ACTIVATIONS, InputView, Resample

ROOT = Path(__file__).resolve().parents[3]
HARNESS = Path(__file__).with_name("conv_tiles_harness.cpp")
SIMT, MMA_GENERIC, MMA_ASYNC = 0, 1, 2
VARIANT_DTYPE = {SIMT: torch.float32, MMA_GENERIC: torch.float16, MMA_ASYNC: torch.float16}
SLOPE = 0.1


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> ctypes.CDLL:
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no host C++ compiler (g++) to build the harness")
    lib = tmp_path_factory.mktemp("cuda_harness") / "conv_tiles_harness.so"
    cmd = [cxx, "-std=c++17", "-O2", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror",
           f"-I{ROOT / 'csrc' / 'include'}", str(HARNESS), "-o", str(lib)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"the harness does not compile:\n{proc.stderr}"
    dll = ctypes.CDLL(str(lib))
    ll = ctypes.POINTER(ctypes.c_longlong)
    ip = ctypes.POINTER(ctypes.c_int)
    u64, i32, f32, buf = ctypes.c_ulonglong, ctypes.c_int, ctypes.c_float, ctypes.c_char_p
    dll.uf_conv_host.argtypes = [i32, i32, ll, u64, u64, ll, ll, ll, ip, i32, f32, buf, i32]
    dll.uf_conv_transpose_host.argtypes = [i32, ll, u64, u64, ll, ip, i32, f32, buf, i32]
    dll.uf_async_a_ok.argtypes = [i32, ll]
    dll.uf_view_copy_host.argtypes = [ll, ll, i32, i32, i32, buf, i32]
    dll.uf_maxpool_host.argtypes = [ll, ll, i32, i32, i32, i32]
    dll.uf_head_host.argtypes = [ll, u64, u64, i32, i32, ll, i32, i32, i32, buf, i32]
    return dll


def _ll(values: list[int]):
    return (ctypes.c_longlong * len(values))(*values)


def _ints(values: list[int]):
    return (ctypes.c_int * len(values))(*values)


def _check(rc: int, err) -> None:
    assert rc == 0, f"harness rejected the call: {err.value.decode()}"


def _packed_fp32(w: torch.Tensor, variant: int) -> cuda.PackedConvWeight:
    """The variant's packing (k-tile padding), with fp32 storage: the harness computes in fp32."""
    p = cuda.pack_conv_weight(w, VARIANT_DTYPE[variant])
    return cuda.PackedConvWeight(p.data.float().contiguous(), p.shape, p.cin_pad, p.taps_packed)


def run_conv(dll, variant: int, case: ConvCase, aligned: bool = False):
    run = make_conv_run(case, torch.float32, "cpu", aligned=aligned)
    run.weight = round_to(run.weight, VARIANT_DTYPE[variant])  # what the variant's packing stores
    packed = _packed_fp32(run.weight, variant)
    out, args = cuda.conv2d_args(run.views, packed, run.bias, act=case.act, negative_slope=SLOPE,
                                 residual=run.residual, out=run.out, pool_out=run.pool, require_device=False,
                                 **run.kw)  # fmt: skip
    assert out is run.out
    _, views, wptr, bptr, residual, outp, pool, geom, act, slope = args
    err = ctypes.create_string_buffer(512)
    rc = dll.uf_conv_host(variant, len(views), _ll([x for v in views for x in v]), wptr, bptr, _ll(residual),
                          _ll(outp), _ll(pool), _ints(geom), act, slope, err, 512)  # fmt: skip
    _check(rc, err)
    return run


@pytest.mark.parametrize("variant", [SIMT, MMA_GENERIC], ids=["simt", "mma"])
@pytest.mark.parametrize("case", conv_cases(), ids=str)
def test_conv_tiles_match_reference(harness, variant: int, case: ConvCase) -> None:
    run = run_conv(harness, variant, case)
    ref, ref_pool = run.reference(case.act, SLOPE)
    assert_close(run.out, ref, f"{case} out")
    assert_outside_slot_poisoned(run.out_buf, run.out, f"{case} out")
    if case.pool:
        assert_close(run.pool, ref_pool, f"{case} pool")
        assert_outside_slot_poisoned(run.pool_buf, run.pool, f"{case} pool")


@pytest.mark.parametrize("case", async_cases(), ids=str)
def test_async_a_chunks_match_reference(harness, case: ConvCase) -> None:
    """The cp.async A path (16-byte chunks of 8 channels, zero-filled outside) on eligible views."""
    run = run_conv(harness, MMA_ASYNC, case, aligned=True)
    ref, ref_pool = run.reference(case.act, SLOPE)
    assert_close(run.out, ref, f"{case} out")
    assert_outside_slot_poisoned(run.out_buf, run.out, f"{case} out")
    if case.pool:
        assert_close(run.pool, ref_pool, f"{case} pool")


def test_async_a_eligibility(harness) -> None:
    """Resampled, odd-channel or misaligned views must take the generic loader."""

    def ok(views: list[InputView]) -> bool:
        ints = [x for v in views for x in cuda._view_tuple(v)]
        return bool(harness.uf_async_a_ok(len(views), _ll(ints)))

    buf = torch.randn(1, 9, 11, 40).half()
    assert ok([InputView(buf[..., 8:24]), InputView(buf[..., 24:40], offset=(-1, 0))])
    assert not ok([InputView(buf[..., 8:13])])  # 5 channels
    assert not ok([InputView(buf[..., 4:20])])  # base not 16-byte aligned
    assert not ok([InputView(buf[..., 8:24], Resample("bilinear", (18, 22)))])
    assert not ok([InputView(torch.randn(1, 9, 11, 12).half())])  # pixel stride 12


TRANSPOSE_SHAPES = [(1, 17, 23, 5, 3), (3, 9, 13, 37, 37), (1, 8, 11, 16, 24)]


@pytest.mark.parametrize(
    "variant,n,h,w,cin,cout",
    [(v, *s) for v in (SIMT, MMA_GENERIC) for s in TRANSPOSE_SHAPES]
    + [(MMA_ASYNC, *s) for s in TRANSPOSE_SHAPES if s[3] % 8 == 0],  # async A: 8-channel multiples only
)
def test_conv_transpose_scatter_matches_reference(harness, variant: int, n, h, w, cin, cout) -> None:
    act = ACTIVATIONS[(cin + variant) % len(ACTIVATIONS)]
    x = torch.randn(n, h, w, cin)
    wt = (torch.randn(cin, cout, 2, 2) / cin**0.5).half().float()
    bias = torch.randn(cout)
    buf = torch.full((n, 2 * h, 2 * w, cout + 3), NAN)
    slot = buf[..., 2 : 2 + cout]
    p = cuda.pack_conv_transpose_weight(wt, VARIANT_DTYPE[variant])
    packed = cuda.PackedConvTransposeWeight(p.data.float().contiguous(), p.shape, p.cin_pad)
    _, args = cuda.conv_transpose2x2_args(x, packed, bias, act=act, negative_slope=SLOPE, out=slot,
                                          require_device=False)  # fmt: skip
    _, view, wptr, bptr, outp, geom, act_i, slope = args
    err = ctypes.create_string_buffer(512)
    rc = harness.uf_conv_transpose_host(variant, _ll(view), wptr, bptr, _ll(outp), _ints(geom), act_i, slope, err,
                                        512)  # fmt: skip
    _check(rc, err)
    ref = spec.conv_transpose2x2(x, wt, bias, act=act, negative_slope=SLOPE)
    assert_close(slot, ref, "conv_transpose2x2")
    assert_outside_slot_poisoned(buf, slot, "conv_transpose2x2")


@pytest.mark.parametrize("mode,ac", [("nearest", False), ("bilinear", False), ("bilinear", True)])
def test_view_reads_match_interpolate(harness, mode: str, ac: bool) -> None:
    """cuda_view.h (used by every CUDA op) against F.interpolate via spec.read_view, with crop and pad."""
    src = torch.randn(3, 9, 13, 7)[..., 1:6]
    for size, offset, window in [
        ((18, 26), (0, 0), None),
        ((17, 29), (2, 3), (13, 20)),
        ((20, 25), (-2, -1), (23, 27)),
    ]:
        view = InputView(src, Resample(mode, size, ac), offset, window)
        h, w = view.out_size
        buf = torch.full((3, h, w, 8), NAN)
        out = buf[..., 2:7]
        err = ctypes.create_string_buffer(512)
        rc = harness.uf_view_copy_host(
            _ll(cuda._view_tuple(view)), _ll(cuda._ptr_strides(out)), 3, h, w, err, 512
        )
        _check(rc, err)
        assert_close(out, spec.read_view(view), f"{mode} ac={ac} size={size} offset={offset}")
        assert_outside_slot_poisoned(buf, out, "view copy")


@pytest.mark.parametrize("n,h,w,c", [(1, 17, 23, 5), (3, 33, 47, 37), (1, 3, 5, 3), (3, 2, 2, 5)])
def test_maxpool_element_matches_reference(harness, n, h, w, c) -> None:
    xbuf = torch.randn(n, h, w, c + 2)
    x = xbuf[..., 1 : 1 + c]
    x[0, 0, 0, 0] = NAN  # propagates like F.max_pool2d
    buf = torch.full((n, h // 2, w // 2, c + 4), NAN)
    out = buf[..., 3 : 3 + c]
    harness.uf_maxpool_host(_ll(cuda._ptr_strides(x)), _ll(cuda._ptr_strides(out)), n, h // 2, w // 2, c)
    ref = spec.maxpool2x2(x)
    assert out[0, 0, 0, 0].isnan()
    torch.testing.assert_close(out, ref, equal_nan=True, atol=0, rtol=0)
    assert_outside_slot_poisoned(buf, out, "maxpool2x2")


@pytest.mark.parametrize("op", spec.HEAD_OPS)
@pytest.mark.parametrize("k", [2, 37])
def test_head_pixel_matches_reference(harness, op: str, k: int) -> None:
    n, c = 3, 37
    view = InputView(torch.randn(n, 9, 12, c + 2)[..., 1 : 1 + c], Resample("bilinear", (17, 23), True))
    w, bias = torch.randn(k, c) / c**0.5, torch.randn(k)
    packed = cuda.pack_head_weight(w, torch.float32)
    if op == "argmax":
        buf = out = torch.full((n, 17, 23), -1, dtype=torch.int64)
    else:
        buf = torch.full((n, 17, 23, k + 3), NAN)
        out = buf[..., 1 : 1 + k]
    err = ctypes.create_string_buffer(512)
    rc = harness.uf_head_host(_ll(cuda._view_tuple(view)), packed.data_ptr(), bias.data_ptr(), k,
                              spec.HEAD_OPS.index(op), _ll(cuda._ptr_strides(out)), n, 17, 23, err, 512)  # fmt: skip
    _check(rc, err)
    ref = spec.head(view, w, bias, op)
    if op == "argmax":
        assert torch.equal(out, ref), f"{int((out != ref).sum())} pixels pick another class"
    else:
        assert_close(out, ref, f"head {op}")
        assert_outside_slot_poisoned(buf, out, f"head {op}")
