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


# The fast tier (`pytest -m "not slow"`, a couple of minutes on 2 cores): these are marked slow here, in one
# place, by what makes them slow; the default run (what CI runs) still runs everything. Prefixes of node ids.
SLOW = (
    # the Triton interpreter on CPU: every program instance in Python
    "tests/kernels/triton/",
    "tests/backends/test_backends.py::test_triton_interpreter_matches",
    "tests/engine/test_output_layout.py::test_output_layout_matches_eager[",  # its -triton params, below
    # CUDA compiles (nvcc, where it exists)
    "tests/kernels/cuda/test_cuda_resources.py",
    # Ray (a local cluster per session, Ray Data jobs, a Serve deployment)
    "tests/distributed/test_segment_ray.py",
    "tests/distributed/test_serve.py",
    "tests/distributed/test_serve_command.py",
    # the TensorRT mock
    "tests/export/test_export_tensorrt_mock.py",
    # whole-model sweeps: every family, size, dtype or preset end to end
    "tests/engine/test_model_families.py",
    "tests/engine/test_new_shapes.py::test_every_family_every_size_one_capture",
    "tests/engine/test_new_shapes.py::test_100_random_sizes_leave_memory_bounded",
    "tests/engine/test_cpu_bf16.py::test_bf16_parity_against_the_fp32_model",
    "tests/engine/test_cpu_bf16.py::test_head_outputs_match_the_fp32_engine",
    "tests/engine/test_fused_unet.py::test_size_a_valid_conv_model_cannot_take_names_nearest",
    "tests/kernels/winograd/test_winograd_unet.py",
    "tests/export/test_export_families.py",
    "tests/export/test_export_onnx.py::test_presets",
    "tests/export/test_export_cli.py::test_input_shape_is_derived_from_the_model",
    "tests/models/test_unet.py::test_original_paper_sizes_and_params",
    "tests/test_model_untouched.py",
    "tests/demo/test_demo_segmentation.py",
    # whole benchmark runs and console scripts in a subprocess
    "tests/bench/test_cli_bench.py::test_console_script_splits_progress_from_table",
    "tests/bench/test_load.py::test_bench_warns_and_records",
    "tests/bench/test_bf16_bench.py",
    "tests/test_cli.py::test_triton_is_an_extra_and_its_absence_degrades_cleanly",
    "tests/test_cli.py::test_console_script_info",
)


def _slow(nodeid: str) -> bool:
    if nodeid.startswith("tests/engine/test_output_layout.py::test_output_layout_matches_eager["):
        return nodeid.endswith("-triton]")
    on_gpu = bool(os.environ.get("UNET_FAST_TEST_ON_GPU"))
    if on_gpu and nodeid.startswith(("tests/kernels/triton/", "tests/backends/test_backends.py::test_triton")):
        return False  # on a GPU the Triton kernels compile and run natively
    return nodeid.startswith(SLOW)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _slow(item.nodeid) or "ray_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
