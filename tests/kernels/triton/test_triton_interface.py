"""The Triton module is a backend of the spec.py interface: same names, same call shapes, pack_* once."""

from __future__ import annotations

import inspect

import pytest
import torch
from triton_helpers import assert_parity, conv_weight, launch_configs, rand

from unet_fast.kernels import spec
from unet_fast.kernels import triton as tk
from unet_fast.kernels.triton import common

# spec.py's op and pack functions (the registry's Triton kernels are these: tests/kernels/test_registry.py)
ALL_FUNCTIONS = ("SUPPORTED_DTYPES", "conv2d", "conv_transpose2x2", "head", "maxpool2x2", "pack_conv_transpose_weight",
                 "pack_conv_weight", "pack_head_weight", "upsample_concat")  # fmt: skip


@pytest.mark.parametrize("name", ALL_FUNCTIONS)
def test_exposes_the_backend_interface(name):
    assert hasattr(tk, name), f"unet_fast.kernels.triton lacks {name}"
    if name == "SUPPORTED_DTYPES":
        assert set(tk.SUPPORTED_DTYPES) == set(spec.FLOAT_DTYPES)
        return
    ref, got = inspect.signature(getattr(spec, name)), inspect.signature(getattr(tk, name))
    positional = [p for p in ref.parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
    got_positional = [p for p in got.parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert len(got_positional) == len(positional), f"{name}: positional parameters {got} vs spec {ref}"
    for p in ref.parameters.values():
        if p.kind is p.KEYWORD_ONLY:
            assert p.name in got.parameters, f"{name}: keyword {p.name!r} missing"
            assert got.parameters[p.name].default == p.default, f"{name}: default of {p.name!r} differs"


@pytest.mark.parametrize("dtype", spec.FLOAT_DTYPES, ids=["fp32", "fp16", "bf16"])
def test_pack_functions_cast_and_lay_out_once(dtype):
    w = conv_weight(6, 5, 3)
    assert tk.pack_conv_weight(w, dtype).shape == (3, 3, 5, 6)
    assert tk.pack_conv_weight(w, dtype).dtype == dtype and tk.pack_conv_weight(w, dtype).is_contiguous()
    assert tk.pack_conv_transpose_weight(torch.randn(5, 6, 2, 2), dtype).shape == (5, 2, 2, 6)
    assert tk.pack_head_weight(torch.randn(3, 5, 1, 1), dtype).shape == (5, 3)
    with pytest.raises(ValueError, match="supports"):
        tk.pack_conv_weight(w, torch.float64)


@pytest.mark.gpu  # compiled on a GPU in GPU mode (conftest.py)
def test_allow_tf32_is_accepted_and_fp32_exact_under_the_interpreter():
    """tf32 is opt-in for fp32 on a GPU; the interpreter has no tf32 and computes in fp32. On a GPU the
    products are TF32's (10-bit mantissa, as fp16's): fp16's tolerance; and without the opt-in, fp32's."""
    x, w = rand(1, 9, 11, 5), conv_weight(6, 5, 3)
    ref = spec.conv2d([x], w, None, padding=1)
    interp = {"BLOCK_M": 128, "BLOCK_N": 16, "BLOCK_K": 16, "num_warps": 4, "num_stages": 1}
    for cfg in launch_configs("conv2d", torch.float32, interp):
        for tf32 in (True, False):
            got = tk.conv2d(
                [x], tk.pack_conv_weight(w, torch.float32), None, padding=1, allow_tf32=tf32, config=cfg
            )
            tol = torch.float16 if tf32 and not common.interpreting() else torch.float32
            assert_parity(got, ref, tol, f"allow_tf32={tf32} {cfg}")
