"""Test configuration. TRITON_INTERPRET must be set before any @triton.jit function is imported, so it is
set here, at the top, before the package is imported (shared GPU notes: the interpreter's first trap)."""

import os

if not os.environ.get("UNET_FAST_TEST_ON_GPU"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch

if torch.cuda.is_available():
    # An fp32 reference must be fp32: PyTorch runs cuDNN convolutions in TF32 by default (10-bit mantissa),
    # which is further from the truth than the fp32 kernels under test.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def cuda_available() -> bool:
    return torch.cuda.is_available()


requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (none visible to torch)"
)
