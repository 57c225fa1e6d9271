"""`unet-fast export onnx|tensorrt`: write an ONNX file (with the onnxruntime parity measured at export
printed) or a TensorRT engine.

Exit codes (unet_fast/cli.py): 0 ok, 2 bad usage or input (ValueError/FileNotFoundError), 1 when TensorRT
is unavailable here or the parity check fails."""

from __future__ import annotations

import argparse
import sys

MODELS = ("unet", "original", "milesial", "milesial-bilinear")


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(t) for t in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N,C,H,W (e.g. 1,3,256,256), got {text!r}") from None
    if len(dims) != 4 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"expected four positive sizes N,C,H,W, got {text!r}")
    return dims


def _model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (when exporting a PyTorch model)")
    g.add_argument("--model", choices=MODELS, default="unet",
                   help="our UNet (configured by the options below) or a preset (default: unet)")  # fmt: skip
    g.add_argument(
        "--weights", default=None, help="state-dict file; default: random weights and BN statistics"
    )
    g.add_argument("--in-channels", type=int, default=3)
    g.add_argument("--classes", type=int, default=2)
    g.add_argument("--base-channels", type=int, default=64)
    g.add_argument("--depth", type=int, default=4)
    g.add_argument("--norm", choices=("batch", "none"), default="batch")
    g.add_argument("--upsample", choices=("transpose", "bilinear", "nearest"), default="transpose")
    g.add_argument("--align-corners", choices=("true", "false"), default="true", help="bilinear only")
    g.add_argument("--padding", choices=("same", "valid"), default="same")
    g.add_argument("--head", choices=("softmax", "sigmoid", "logits"), default="softmax")
    g.add_argument("--seed", type=int, default=0, help="seed of the random weights and test inputs")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a U-Net to ONNX or a TensorRT engine",
                       description="Export a U-Net to ONNX (BN folded, PyTorch-exact resizes, dynamic batch/H/W, "
                       "parity against PyTorch measured with onnxruntime) or build a TensorRT engine.")  # fmt: skip
    targets = p.add_subparsers(dest="target", required=True, metavar="TARGET")

    o = targets.add_parser("onnx", help="write an ONNX file and print its parity against PyTorch")
    o.add_argument("--out", required=True, help="ONNX file to write")
    o.add_argument("--input-shape", type=_shape, default=(1, 3, 256, 256), help="example input N,C,H,W")
    o.add_argument("--opset", type=int, default=17)
    o.add_argument("--static", action="store_true", help="fixed input shape (default: dynamic batch, H, W)")
    o.add_argument("--class-map", action="store_true", help="append an argmax head: int32 (N, H, W) output")
    o.add_argument("--fp16", action="store_true",
                   help="fp16 weights and activations (softmax kept fp32; fp32 input/output), for strongly typed TensorRT")  # fmt: skip
    o.add_argument("--no-parity", action="store_true", help="skip the onnxruntime parity check")
    o.add_argument("--allow-mismatch", action="store_true",
                   help="keep the file even when parity is out of tolerance (default: fail, exit 1, no file)")  # fmt: skip
    o.add_argument("--max-abs", type=float, default=None,
                   help="fail (exit 1) if a parity max abs error exceeds this (default: 1e-4 fp32, 2e-3 --fp16, "
                   "from unet_fast.kernels.spec.TOLERANCES)")  # fmt: skip
    _model_args(o)
    o.set_defaults(func=run)

    t = targets.add_parser("tensorrt", help="build a serialized TensorRT engine (needs TensorRT and a GPU)")
    t.add_argument("--out", required=True, help="engine file to write (a .json sidecar is written beside it)")
    t.add_argument("--onnx", default=None, help="build from this ONNX file instead of exporting the model")
    t.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp16")
    t.add_argument("--opt-shape", type=_shape, default=(1, 3, 256, 256), help="shape TensorRT tunes for")
    t.add_argument("--min-shape", type=_shape, default=None, help="smallest input (default: opt)")
    t.add_argument("--max-shape", type=_shape, default=None, help="largest input (default: opt)")
    t.add_argument(
        "--workspace", type=int, default=1 << 30, help="builder workspace in bytes (default 1 GiB)"
    )
    t.add_argument("--timing-cache", default=None, help="timing cache file, read and updated")
    t.add_argument("--strongly-typed", choices=("auto", "yes", "no"), default="auto",
                   help="precision from an fp16 ONNX graph (yes) or builder flags (no); auto: what TensorRT has")  # fmt: skip
    t.add_argument("--allow-mismatch", action="store_true",
                   help="build even when the ONNX parity check is out of tolerance (default: fail, exit 1)")  # fmt: skip
    t.add_argument("--no-keep-fp32", action="store_true",
                   help="let softmax/normalisation layers run in fp16 (default: pinned to fp32)")  # fmt: skip
    _model_args(t)
    t.set_defaults(func=run)


def build_model(args: argparse.Namespace):
    import torch

    from unet_fast import UNet, unet_milesial, unet_original
    from unet_fast.bench.workloads import randomize_bn

    torch.manual_seed(args.seed)
    if args.model == "original":
        model = unet_original(args.in_channels, args.classes)
    elif args.model.startswith("milesial"):
        model = unet_milesial(args.in_channels, args.classes, bilinear=args.model.endswith("bilinear"))
    else:
        model = UNet(args.in_channels, args.classes, args.base_channels, args.depth,
                     None if args.norm == "none" else "batch", args.upsample, args.align_corners == "true",
                     args.padding, args.head)  # fmt: skip
    if args.weights:
        model.load_weights(args.weights)
    else:
        randomize_bn(model, args.seed)
        print(
            f"note: {args.model} with random weights and BN statistics (seed {args.seed}); --weights to load yours"
        )
    return model.eval()


def run(args: argparse.Namespace) -> int:
    from unet_fast.export.onnx import ExportParityError

    try:
        return _run(args)
    except ExportParityError as e:
        print(f"unet-fast export {args.target}: error: {e}".replace("allow_mismatch=True (CLI: --allow-mismatch)",
                                                                     "--allow-mismatch"), file=sys.stderr)  # fmt: skip
        return 1


def _run(args: argparse.Namespace) -> int:
    import torch

    if args.target == "onnx":
        from unet_fast.export.onnx import to_onnx

        model = build_model(args)
        if args.input_shape[1] != model.config.in_channels:
            raise ValueError(
                f"--input-shape has {args.input_shape[1]} channels, the model takes {model.config.in_channels}"
            )
        x = torch.randn(args.input_shape, generator=torch.Generator().manual_seed(args.seed))
        result = to_onnx(model, args.out, x, dynamic=() if args.static else ("batch", "height", "width"),
                         opset=args.opset, class_map=args.class_map, check_parity=not args.no_parity,
                         precision="fp16" if args.fp16 else "fp32",
                         allow_mismatch=args.allow_mismatch)  # fmt: skip
        print(result.summary())
        from unet_fast.kernels.spec import TOLERANCES

        limit = (
            args.max_abs
            if args.max_abs is not None
            else TOLERANCES[torch.float16 if args.fp16 else torch.float32][0]
        )
        worst = max((p.get("max_abs", float("inf")) for p in result.parity), default=0.0)
        if not args.class_map and worst > limit:
            print(f"parity check FAILED: max abs error {worst:.3g} > {limit:g}", file=sys.stderr)
            return 1
        return 0

    from unet_fast.export.tensorrt import TensorRTUnavailable, to_tensorrt

    source = args.onnx if args.onnx else build_model(args)
    try:
        build = to_tensorrt(source, args.out, precision=args.precision, min_shape=args.min_shape,
                            opt_shape=args.opt_shape, max_shape=args.max_shape, workspace=args.workspace,
                            timing_cache=args.timing_cache, keep_fp32=not args.no_keep_fp32,
                            strongly_typed={"auto": None, "yes": True, "no": False}[args.strongly_typed],
                            allow_mismatch=args.allow_mismatch)  # fmt: skip
    except TensorRTUnavailable as e:
        print(f"unet-fast export tensorrt: {e}", file=sys.stderr)
        return 1
    info = build.info
    print(f"wrote {build.engine} (TensorRT {info.tensorrt}, {info.precision}, profile min {info.profile['min']} "
          f"opt {info.profile['opt']} max {info.profile['max']}; fp32-pinned layers: {len(info.fp32_layers)})")  # fmt: skip
    return 0
