"""Parity of the cpu backend's bf16 engine on the model families of tests/engine/test_cpu_bf16.py (the same
models, sizes and seed-7 inputs): rel-L2 and argmax agreement against the fp32 model, with the bf16 3x3 convs
on the Winograd on bf16 activations (auto) and on the bf16 tile conv only (UNET_FAST_KERNELS=bf16_winograd=off), beside
eager PyTorch bf16 channels_last. No timing. The table of docs/amx_bf16.md ("Per family"). From the repository
root:

    python benchmarks/bf16_family_parity.py
"""

from __future__ import annotations

import copy
import importlib
import os
import sys
from pathlib import Path

import torch

import unet_fast
from unet_fast.parity import compare

TESTS = Path(__file__).resolve().parents[1] / "tests"


def main() -> int:
    sys.path[:0] = [str(TESTS / "engine"), str(TESTS / "models"), str(TESTS)]
    families = importlib.import_module("test_cpu_bf16")  # the test module's models: one definition of each
    print("| model | Winograd convs | auto | tile conv only | eager bf16 |")
    print("| --- | --- | --- | --- | --- |")
    for name in families.MODELS:
        model, shape = families._model(name)
        x = torch.randn(shape, generator=torch.Generator().manual_seed(7))
        cells, wino = [], 0
        with torch.no_grad():
            ref = model(x)
            for conv in ("auto", "tiles"):
                os.environ[families.KERNELS_ENV] = families.CONV_CHOICES[conv]
                fast = unet_fast.optimize(model, x, backend="cpu", dtype=torch.bfloat16)
                c = compare(ref, fast(x), 1)
                if conv == "auto":
                    wino = sum(r.algorithm.startswith("Winograd") for r in fast.executor_for(shape).records())
                cells.append(f"{c.rel_l2:.1e}, {100 * c.argmax_agreement:.2f} %")
            eager = copy.deepcopy(model).to(memory_format=torch.channels_last, dtype=torch.bfloat16)
            e = compare(ref, eager(x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)).float(), 1)
        print(f"| {name} {shape[2]}x{shape[3]} | {wino} | {cells[0]} | {cells[1]} | "
              f"{e.rel_l2:.1e}, {100 * e.argmax_agreement:.2f} % |", flush=True)  # fmt: skip
    os.environ.pop(families.KERNELS_ENV, None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
