"""How CPU tensors and input views cross into the C++ kernels: the NHWC descriptor, the per-view source
tuple and the thread count, written once for every CPU launcher (fp32 ops, Winograd, the bf16 tile conv and
the bf16 ops). A leaf of kernels/: every CPU kernel module imports it, it imports none of them."""

from __future__ import annotations

import torch
from torch import Tensor

from unet_fast.kernels.spec import InputView


def num_threads() -> int:
    """The thread count every CPU op uses: torch's, so the two never oversubscribe the cores."""
    return max(1, torch.get_num_threads())


# C++ ResampleMode (csrc/include/unet_fast/resample.h): 0 none, 1 nearest, 2 bilinear.
RESAMPLE_MODES = {None: 0, "nearest": 1, "bilinear": 2}


def nhwc_desc(t: Tensor) -> tuple[int, ...]:
    """(data pointer, N, H, W, C, stride N, stride H, stride W, extent) of an NHWC tensor whose channel
    stride is 1; a 3-D [N, H, W] class map is described with C = 1. `extent` = elements the storage
    holds from the data pointer on: the C++ side checks every addressed element lies inside it
    (csrc/include/unet_fast/cpu_tensor.h)."""
    if t.dim() == 3:
        n, h, w = t.shape
        c, (sn, sh, sw) = 1, t.stride()
    else:
        n, h, w, c = t.shape
        sn, sh, sw, _ = t.stride()
    extent = t.untyped_storage().nbytes() // t.element_size() - t.storage_offset()
    return (t.data_ptr(), n, h, w, c, sn, sh, sw, extent)


def view_source(v: InputView) -> tuple:
    """A view as the C++ kernels take it: (descriptor, resample mode, resampled H, W, align_corners, window
    offset y, x)."""
    rh, rw = v.source_size
    r = v.resample
    return (nhwc_desc(v.tensor), RESAMPLE_MODES[None if r is None else r.mode], rh, rw,
            bool(r is not None and r.align_corners), v.offset[0], v.offset[1])  # fmt: skip
