"""Whole-model error of the cpu backend per Winograd tile (issue 25): rel-L2 of the engine's output against
PyTorch fp32 (the issue's 1e-5 budget) and against the float64 model, with UNET_FAST_KERNELS winograd=auto (the
size rule: F(6x6) on the big maps), winograd=4 (F(4x4) only) and winograd=6 (F(6x6) wherever Winograd runs).

    python benchmarks/winograd_tile_error.py [--models unet64,unet-original,unet-bilinear,smp-resnet34]
        [--sizes 256,512]

Models: the bench workloads' (lively weights); smp-resnet34 is the in-repo stand-in of smp.Unet('resnet34')
(tests/models/smp_like.py, the engine tests' model) where segmentation_models_pytorch is not installed.
unet-original takes valid-padding sizes: 252 and 508 stand for 256 and 512. Batch 1, seed 0 input.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

import unet_fast
from unet_fast.bench.workloads import get_workload
from unet_fast.models.weights import lively_weights
from unet_fast.parity import compare

VALID = {256: 252, 512: 508}  # unet-original (valid convs) at the nearest sizes it takes


def build(name: str) -> torch.nn.Module:
    if name == "smp-resnet34":
        try:
            return get_workload("smp-resnet34").build()
        except ValueError:  # segmentation_models_pytorch not installed: the engine tests' stand-in
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "models"))
            from smp_like import SmpLikeUnet

            return lively_weights(SmpLikeUnet("resnet34", 3, 2), 7)
    return get_workload({"unet64": "unet64-256"}.get(name, name)).build()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="unet64,unet-original,unet-bilinear,smp-resnet34")
    ap.add_argument("--sizes", default="256,512")
    args = ap.parse_args(argv)
    print("| model | input | rel-L2 vs fp32: auto | F(4x4) only | F(6x6) only | vs float64: auto | F(4x4) | "
          "F(6x6) | PyTorch fp32 | convs on F(6x6) (auto) |")  # fmt: skip
    print("|" + "---|" * 10)
    for name in args.models.split(","):
        model = build(name).eval()
        cin = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d)).in_channels
        for size in (int(s) for s in args.sizes.split(",")):
            s = VALID[size] if name == "unet-original" else size
            x = torch.randn(1, cin, s, s, generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                ref32 = model(x)
                ref64 = model.double()(x.double())
                model.float()
            row: dict[str, tuple[float, float]] = {}
            n6 = ""
            for tile in ("auto", "4", "6"):
                os.environ["UNET_FAST_KERNELS"] = f"winograd={tile}"
                try:
                    fast = unet_fast.optimize(model, x, backend="cpu")
                finally:
                    os.environ.pop("UNET_FAST_KERNELS")
                with torch.no_grad():
                    out = fast(x)
                row[tile] = (compare(ref32, out).rel_l2, compare(ref64, out.double()).rel_l2)
                if tile == "auto":
                    convs = [r for r in fast.report_data().steps if r.kind == "Conv"]
                    n6 = f"{sum('winograd6' in r.kernel for r in convs)} of {len(convs)}"
            torch_err = compare(ref64, ref32.double()).rel_l2
            print(f"| {name} | {s} | {row['auto'][0]:.2e} | {row['4'][0]:.2e} | {row['6'][0]:.2e} | "
                  f"{row['auto'][1]:.2e} | {row['4'][1]:.2e} | {row['6'][1]:.2e} | {torch_err:.2e} | {n6} |",
                  flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
