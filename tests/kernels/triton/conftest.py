"""GPU mode of the Triton kernel tests.

By default (tests/conftest.py sets TRITON_INTERPRET=1) they run the kernels in Triton's interpreter on CPU
tensors, each with one large-block config (the interpreter's cost is per program). With
UNET_FAST_TEST_ON_GPU=1 the interpreter is off and the tests marked `gpu` run the compiled kernels on the
GPU: tensors are created there (torch's default device, so the same test code builds them; the fp32
references are fp32, TF32 off: tests/conftest.py), and each test checks every shipped config of its kernel
for the GPU's arch (triton_helpers.launch_configs). Without a CUDA device they skip.
"""

from __future__ import annotations

import pytest
import torch

from unet_fast.kernels.triton import common


@pytest.fixture(autouse=True)
def _triton_device(request: pytest.FixtureRequest):
    if common.interpreting() or request.node.get_closest_marker("gpu") is None:
        yield
        return
    if not torch.cuda.is_available():
        pytest.skip("compiled Triton (UNET_FAST_TEST_ON_GPU=1) needs a CUDA device; none is visible to torch")
    torch.set_default_device("cuda")
    try:
        yield
    finally:
        torch.set_default_device(None)
