"""`python -m unet_fast.export.report`: export every U-Net family and resize mode to ONNX and print the
onnxruntime-vs-PyTorch parity measured at export (worst over the sizes checked) as a markdown table.

Weights: He-normal convolutions and random BN statistics (`lively_weights`), seed 0.
Families: our UNet in every configuration, the presets, and (from a source checkout) the test stand-ins
for milesial's Pytorch-UNet, segmentation_models_pytorch's Unet-resnet34 and MONAI's BasicUNet
(tests/models/). The "dynamic" column is what the file declares: axes the export had to fix are named."""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from unet_fast import UNet, unet_milesial, unet_original
from unet_fast.export.errors import DynamicAxesFixedWarning
from unet_fast.models.weights import lively_weights

Case = tuple[str, Callable[[], nn.Module], tuple[int, int, int, int]]


def _test_model(name: str):
    path = Path(__file__).resolve().parents[2] / "tests" / "models" / f"{name}.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location(f"_report_{name}", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def cases(base: int) -> Iterator[Case]:
    for up, ac in (("transpose", True), ("bilinear", True), ("bilinear", False), ("nearest", True)):
        for padding in ("same", "valid"):
            for norm in ("batch", None):
                name = f"UNet {padding} {up}{f' ac={ac}' if up == 'bilinear' else ''} {'BN' if norm else 'no-BN'}"
                size = (
                    64 if padding == "same" else 92
                )  # 92: the smallest valid-padding depth-3 input above 64

                def build(up=up, ac=ac, padding=padding, norm=norm) -> nn.Module:
                    return UNet(3, 3, base, 3, norm, up, ac, padding, "softmax")

                yield name, build, (1, 3, size, size)
    yield "unet_original() (full width)", lambda: unet_original(), (1, 1, 188, 188)
    yield "unet_milesial(bilinear=False) (full width)", lambda: unet_milesial(), (1, 3, 64, 64)
    yield "unet_milesial(bilinear=True) (full width)", lambda: unet_milesial(bilinear=True), (1, 3, 64, 64)
    mil = _test_model("milesial_unet")
    if mil is not None:
        for bilinear in (False, True):
            yield (f"milesial Pytorch-UNet layout, bilinear={bilinear}, base {base}",
                   lambda b=bilinear: mil.MilesialUNet(3, 2, bilinear=b, base=base), (1, 3, 64, 64))  # fmt: skip
    smp = _test_model("smp_like")
    if smp is not None:
        yield ("smp-like Unet(resnet34), decoder (16, 8, 8, 4, 4)",
               lambda: smp.SmpLikeUnet("resnet34", classes=3, decoder_channels=(16, 8, 8, 4, 4)), (1, 3, 64, 64))  # fmt: skip
    monai = _test_model("monai_like")
    if monai is not None:
        for norm in ("instance", "batch"):
            yield (f"MONAI BasicUNet layout, features (8, 8, 16, 32, 64, 8), {norm} norm",
                   lambda n=norm: monai.BasicUNetLike(1, 3, (8, 8, 16, 32, 64, 8), norm=n), (1, 1, 64, 64))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m unet_fast.export.report", description=__doc__)
    p.add_argument("--base-channels", type=int, default=8, help="width of the configurable UNets (default 8)")
    p.add_argument("--filter", default="", help="only cases whose name contains this")
    p.add_argument("--fp16", action="store_true", help="fp16 ONNX graphs (softmax kept fp32) instead of fp32")
    args = p.parse_args(argv)
    from unet_fast.export.onnx import to_onnx

    print("| model | resize nodes | dynamic | sizes checked | max abs | rel L2 | argmax agreement |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for name, build, shape in cases(args.base_channels):
            if args.filter not in name:
                continue
            torch.manual_seed(0)
            model = lively_weights(build())
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DynamicAxesFixedWarning)  # the table's "dynamic" column says it
                r = to_onnx(
                    model, Path(tmp) / "m.onnx", torch.randn(shape), precision="fp16" if args.fp16 else "fp32"
                )
            rows = [row for row in r.parity if "skipped" not in row]
            bad = [row for row in rows if "error" in row]
            if bad:
                print(f"| {name} | - | - | - | ERROR: {bad[0]['error']} | | |")
                continue
            exp = r.metadata["export"]
            modes = sorted({f"{z['mode']}/{z['coordinate_transformation_mode']}" for z in exp["resize"]})
            fixed = f" ({', '.join(f'{a} fixed' for a in exp['fixed_axes'])})" if exp["fixed_axes"] else ""
            sizes = ", ".join("x".join(str(d) for d in row["input_shape"]) for row in rows)
            print(f"| {name} | {', '.join(modes) or '-'} | {', '.join(exp['dynamic']) or 'none'}{fixed} | {sizes} | "
                  f"{max(x['max_abs'] for x in rows):.2e} | {max(x['rel_l2'] for x in rows):.2e} | "
                  f"{min(x['argmax_agreement'] for x in rows):.4%} |")  # fmt: skip
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
