"""`unet-fast export onnx|tensorrt|engine`: write an ONNX file (with the onnxruntime parity measured at export
printed), a TensorRT engine, or a unet_fast engine file (unet_fast.save: loaded without compiling again).

The model: `--weights W.pt` with its model card `W.json` beside it (as `unet-fast segment` reads it), a
milesial/Pytorch-UNet or segmentation_models_pytorch checkpoint (`--model milesial|smp`), or random weights
for an architecture given by the options (unet_fast/export/sources.py). The example input's channels come
from the model; its size from the card's patch size, else 256 (or the nearest size the model takes).

Exit codes (unet_fast/cli.py): 0 ok, 2 bad usage or input (ValueError/FileNotFoundError), 1 when TensorRT
is unavailable here, the parity check fails or the exporter cannot write the model (ExportError)."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from unet_fast.export.sources import FAMILIES

# Our UNet's options: None on the command line means "not given" (the card or the weights decide, else
# the default here), so a value the user typed can be checked against the card instead of silently lost.
UNET_DEFAULTS = {"in_channels": 3, "num_classes": 2, "base_channels": 64, "depth": 4, "norm": "batch",
                 "upsample": "transpose", "align_corners": True, "padding": "same", "head": "softmax"}  # fmt: skip
_OPTION = {"num_classes": "classes"}


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
    g.add_argument("--model", choices=FAMILIES, default=None,
                   help="our UNet (configured by the model card beside --weights, or by the options below), a "
                   "preset (original, milesial, milesial-bilinear), a milesial/Pytorch-UNet checkpoint "
                   "(milesial with --weights), or segmentation_models_pytorch.Unet (smp, when installed) "
                   "(default: unet)")  # fmt: skip
    g.add_argument("--weights", default=None,
                   help="state-dict file (default: random weights and BN statistics, seeded by --seed)")  # fmt: skip
    g.add_argument("--card", default=None,
                   help="model card JSON (default: the weights' name with .json, when that file exists)")  # fmt: skip
    g.add_argument("--in-channels", type=int, default=None,
                   help="input channels (default: from the card or the checkpoint, else 3; 1 for original)")  # fmt: skip
    g.add_argument("--classes", type=int, default=None,
                   help="output classes (default: from the card or the checkpoint, else 2)")  # fmt: skip
    g.add_argument("--base-channels", type=int, default=None, help="UNet width of the first level (default: card, else 64)")
    g.add_argument("--depth", type=int, default=None, help="UNet levels, 2x2 pools (default: card, else 4)")
    g.add_argument("--norm", choices=("batch", "none"), default=None,
                   help="normalisation after each conv (default: card, else batch)")  # fmt: skip
    g.add_argument("--upsample", choices=("transpose", "bilinear", "nearest"), default=None,
                   help="decoder upsampling (default: card, else transpose)")  # fmt: skip
    g.add_argument("--align-corners", choices=("true", "false"), default=None,
                   help="bilinear only (default: card, else true)")  # fmt: skip
    g.add_argument("--padding", choices=("same", "valid"), default=None,
                   help="conv padding: same keeps the size, valid shrinks it (default: card, else same)")  # fmt: skip
    g.add_argument("--head", choices=("softmax", "sigmoid", "logits"), default=None,
                   help="output activation (default: card, else softmax)")  # fmt: skip
    g.add_argument("--encoder", default="resnet34", help="smp encoder name (default: resnet34)")
    g.add_argument("--seed", type=int, default=0, help="seed of the random weights and test inputs (default: 0)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a U-Net to ONNX, a TensorRT engine or a unet_fast engine file",
                       description="Export a U-Net to ONNX (BN folded, PyTorch-exact resizes, dynamic batch/H/W, "
                       "parity against PyTorch measured with onnxruntime) or build a TensorRT engine.")  # fmt: skip
    targets = p.add_subparsers(dest="target", required=True, metavar="TARGET")

    o = targets.add_parser("onnx", help="write an ONNX file and print its parity against PyTorch")
    o.add_argument("--out", required=True, help="ONNX file to write")
    o.add_argument("--input-shape", type=_shape, default=None,
                   help="example input N,C,H,W (default: 1,C,S,S with C the model's input channels and S the "
                   "model card's patch size, else 256 or the nearest size the model takes)")  # fmt: skip
    o.add_argument("--opset", type=int, default=17, help="ONNX opset, >= 17 (default: 17)")
    o.add_argument("--static", action="store_true", help="fixed input shape (default: dynamic batch, H, W)")
    o.add_argument("--class-map", action="store_true", help="append an argmax head: int32 (N, H, W) output")
    o.add_argument("--fp16", action="store_true",
                   help="fp16 weights and activations (softmax kept fp32; fp32 input/output), for strongly typed TensorRT")  # fmt: skip
    o.add_argument("--no-parity", action="store_true", help="skip the onnxruntime parity check")
    o.add_argument("--allow-mismatch", action="store_true",
                   help="keep the file even when parity is out of tolerance (default: fail, exit 1, no file)")  # fmt: skip
    o.add_argument("--max-abs", type=float, default=None,
                   help="also fail (exit 1) if a parity max abs error exceeds this (default: no extra limit; "
                   "the export's own limits are unet_fast.export.onnx.PARITY_LIMITS)")  # fmt: skip
    _model_args(o)
    o.set_defaults(func=run)

    e = targets.add_parser("engine", help="write a unet_fast engine file (.ufe): the captured program and packed "
                           "weights, loaded by unet_fast.load / segment --engine in a fraction of a second",
                           description="Optimize the model once (unet_fast.optimize) and save the engine "
                           "(unet_fast.save): captures, folded and packed weights, no pickle. unet_fast.load(FILE) "
                           "runs it without capturing or packing again (docs/engine_files.md).")  # fmt: skip
    e.add_argument("--out", required=True, help="engine file to write (conventionally .ufe)")
    e.add_argument("--input-shape", type=_shape, default=None,
                   help="example input N,C,H,W (default: 1,C,S,S with S the model card's patch size, else 256 or "
                   "the nearest size the model takes); other sizes run later without capturing again")  # fmt: skip
    e.add_argument("--backend", default="auto", choices=("auto", "cpu", "torch", "triton", "cuda"),
                   help="engine backend (default: auto, the best one here)")  # fmt: skip
    e.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                   help="engine storage dtype (default: float32)")  # fmt: skip
    e.add_argument("--exact", action="store_true", help="direct convolution only (no Winograd)")
    e.add_argument("--output", default="model", choices=("model", "logits", "probabilities", "classes"),
                   help="what the engine returns (default: what the model returns)")  # fmt: skip
    _model_args(e)
    e.set_defaults(func=run)

    t = targets.add_parser("tensorrt", help="build a serialized TensorRT engine (needs TensorRT and a GPU)")
    t.add_argument("--out", required=True, help="engine file to write (a .json sidecar is written beside it)")
    t.add_argument("--onnx", default=None, help="build from this ONNX file instead of exporting the model")
    t.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp16", help="engine precision (default: fp16)")
    t.add_argument("--opt-shape", type=_shape, default=None,
                   help="shape TensorRT tunes for (default: like onnx --input-shape, from the model or the ONNX input)")  # fmt: skip
    t.add_argument("--min-shape", type=_shape, default=None, help="smallest input (default: opt)")
    t.add_argument("--max-shape", type=_shape, default=None, help="largest input (default: opt)")
    t.add_argument(
        "--workspace", type=int, default=1 << 30, help="builder workspace in bytes (default 1 GiB)"
    )
    t.add_argument("--timing-cache", default=None, help="timing cache file, read and updated (default: none)")
    t.add_argument("--strongly-typed", choices=("auto", "yes", "no"), default="auto",
                   help="precision from an fp16 ONNX graph (yes) or builder flags (no); auto: what TensorRT has")  # fmt: skip
    t.add_argument("--allow-mismatch", action="store_true",
                   help="build even when the ONNX parity check is out of tolerance (default: fail, exit 1)")  # fmt: skip
    t.add_argument("--no-keep-fp32", action="store_true",
                   help="let softmax/normalisation layers run in fp16 (default: pinned to fp32)")  # fmt: skip
    _model_args(t)
    t.set_defaults(func=run)


def _given(args: argparse.Namespace) -> dict:
    """Our UNet's options the user typed, in UNetConfig's names and types."""
    out = {}
    for key in UNET_DEFAULTS:
        value = getattr(args, _OPTION.get(key, key))
        if value is None:
            continue
        if key == "norm":
            value = None if value == "none" else value
        elif key == "align_corners":
            value = value == "true"
        out[key] = value
    return out


def _check_against(given: dict, config: dict, where: str) -> None:
    bad = [f"--{_OPTION.get(k, k).replace('_', '-')} {v} (it says {config[k]})" for k, v in given.items()
           if k in config and config[k] != v]  # fmt: skip
    if bad:
        raise ValueError(f"these options disagree with {where}, which describes the model: {', '.join(bad)}; "
                         "drop them")  # fmt: skip


def build_source(args: argparse.Namespace):
    """The model to export (eval mode), with where it came from (unet_fast.export.sources.Source)."""
    import torch

    from unet_fast import UNet, unet_milesial, unet_original
    from unet_fast.bench.workloads import randomize_bn
    from unet_fast.export import sources as src
    from unet_fast.inference.model_card import card_path_for, load_model, read_card
    from unet_fast.models.unet import load_state_dict_strict

    family = args.model or "unet"
    given = _given(args)
    weights = Path(args.weights) if args.weights else None
    if args.card and weights is None:
        raise ValueError("--card describes trained weights: give --weights too")
    if args.card and family != "unet":
        raise ValueError(f"a model card describes our UNet; it does not go with --model {family}")
    card_path = Path(args.card) if args.card else (card_path_for(weights) if weights else None)
    foreign = sorted(k for k in given if k not in ("in_channels", "num_classes"))
    if family != "unet" and foreign:
        names = ", ".join(f"--{_OPTION.get(k, k).replace('_', '-')}" for k in foreign)
        raise ValueError(f"{names}: options of our configurable UNet (--model unet), not of --model {family}, "
                         "whose layout is fixed (only --in-channels and --classes apply)")  # fmt: skip
    torch.manual_seed(args.seed)

    if family == "unet" and weights is not None and card_path is not None and (args.card or card_path.is_file()):
        card = read_card(card_path)
        _check_against(given, card.config, f"the model card {card_path}")
        model, card = load_model(weights, card)
        return src.Source(model, f"UNet {_brief(card.config)} from the model card {card_path}, weights {weights}",
                          card.in_channels, card.patch_size)  # fmt: skip

    state = src.read_state_dict(weights) if weights is not None else None
    if family == "unet":
        model = UNet(**{**UNET_DEFAULTS, **given})
    elif family == "original":
        model = unet_original(given.get("in_channels", 1), given.get("num_classes", 2))
    elif family.startswith("milesial") and state is not None and src.is_milesial_checkpoint(state):
        config, state = src.milesial_to_unet(state)
        _check_against(given, config, f"the milesial checkpoint {weights}")
        model = UNet(**config)
    elif family.startswith("milesial"):
        model = unet_milesial(given.get("in_channels", 3), given.get("num_classes", 2),
                              bilinear=family.endswith("bilinear"))  # fmt: skip
    else:  # smp: channels and classes from the checkpoint where there is one
        inferred = {}
        if state is not None and "encoder.conv1.weight" in state and "segmentation_head.0.weight" in state:
            inferred = {"in_channels": int(state["encoder.conv1.weight"].shape[1]),
                        "num_classes": int(state["segmentation_head.0.weight"].shape[0])}  # fmt: skip
            _check_against({k: v for k, v in given.items() if k in inferred}, inferred, f"the weights {weights}")
        cfg = {**UNET_DEFAULTS, **inferred, **given}
        model = src.smp_unet(args.encoder, cfg["in_channels"], cfg["num_classes"])

    if state is None:
        randomize_bn(model, args.seed)
        where = f"random weights and BN statistics (seed {args.seed}); --weights to load yours"
    else:
        try:
            if isinstance(model, UNet):
                model.load_weights(state)
            else:
                load_state_dict_strict(model, state, f"smp.Unet({args.encoder!r})")
        except ValueError as e:
            hint = (f". No model card beside the weights ({card_path} not found): give the architecture "
                    "with the options above, --card CARD.json, or --model milesial|smp for those checkpoints"
                    if family == "unet" else "")  # fmt: skip
            raise ValueError(f"{weights}: {e}{hint}") from None
        where = f"weights {weights}"
    model.eval()
    what = f"UNet {_brief(model.config_dict())}" if isinstance(model, UNet) else f"smp.Unet({args.encoder!r})"
    return src.Source(model, f"{family}: {what}, {where}", src.in_channels_of(model))


def _brief(config: dict) -> str:
    return (f"({config['in_channels']} -> {config['num_classes']} classes, base {config['base_channels']}, "
            f"depth {config['depth']}, {config['upsample']} up, {config['padding']} padding, {config['head']})")  # fmt: skip


def _example_shape(args_shape: tuple[int, ...] | None, source, flag: str) -> tuple[int, ...]:
    from unet_fast.export.sources import default_size

    if args_shape is None:
        size = source.patch_size or default_size(source.model)
        return (1, source.in_channels, size, size)
    if args_shape[1] != source.in_channels:
        raise ValueError(f"{flag} has {args_shape[1]} channels, the model takes {source.in_channels} "
                         f"(leave {flag} out to derive it from the model)")  # fmt: skip
    return args_shape


def run(args: argparse.Namespace) -> int:
    from unet_fast.export.errors import DynamicAxesFixedWarning, ExportError

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DynamicAxesFixedWarning)
            rc = _run(args)
    except ExportError as e:  # parity out of tolerance, or the exporter / fp16 rewrite failed: exit 1
        print(f"unet-fast export {args.target}: error: {e}".replace("allow_mismatch=True (CLI: --allow-mismatch)",
                                                                     "--allow-mismatch"), file=sys.stderr)  # fmt: skip
        return 1
    for w in caught:  # once, in our words: the summary printed above already says which axes are fixed
        if not issubclass(w.category, DynamicAxesFixedWarning):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return rc


def _run(args: argparse.Namespace) -> int:
    import torch

    if args.target == "engine":
        return _engine(args)

    if args.target == "onnx":
        from unet_fast.export.onnx import to_onnx

        source = build_source(args)
        print(f"model: {source.description}")
        shape = _example_shape(args.input_shape, source, "--input-shape")
        x = torch.randn(shape, generator=torch.Generator().manual_seed(args.seed))
        result = to_onnx(source.model, args.out, x, dynamic=() if args.static else ("batch", "height", "width"),
                         opset=args.opset, class_map=args.class_map, check_parity=not args.no_parity,
                         precision="fp16" if args.fp16 else "fp32",
                         allow_mismatch=args.allow_mismatch)  # fmt: skip
        print(result.summary())
        worst = max((p.get("max_abs", float("inf")) for p in result.parity if "skipped" not in p), default=0.0)
        if args.max_abs is not None and not args.class_map and worst > args.max_abs:
            print(f"parity check FAILED: max abs error {worst:.3g} > --max-abs {args.max_abs:g}", file=sys.stderr)
            return 1
        return 0

    from unet_fast.export.tensorrt import TensorRTUnavailable, to_tensorrt

    if args.onnx:
        source, opt = args.onnx, args.opt_shape or _onnx_input_shape(Path(args.onnx))
    else:
        built = build_source(args)
        print(f"model: {built.description}")
        source, opt = built.model, _example_shape(args.opt_shape, built, "--opt-shape")
    try:
        build = to_tensorrt(source, args.out, precision=args.precision, min_shape=args.min_shape,
                            opt_shape=opt, max_shape=args.max_shape, workspace=args.workspace,
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


def _engine(args: argparse.Namespace) -> int:
    import time

    import torch

    from unet_fast.engine import UnsaveableEngine, optimize, save

    out = Path(args.out)
    if out.is_dir():  # before the minutes of optimize, not after
        raise ValueError(f"--out {out} is a folder; give the engine file to write, e.g. {out / 'model.ufe'}")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"--out {out}: the folder {out.parent} does not exist")
    source = build_source(args)
    print(f"model: {source.description}")
    shape = _example_shape(args.input_shape, source, "--input-shape")
    x = torch.randn(shape, generator=torch.Generator().manual_seed(args.seed))
    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    start = time.perf_counter()
    fast = optimize(source.model, x, backend=args.backend, dtype=dtypes[args.dtype], exact=args.exact,
                    output=args.output)  # fmt: skip
    built = time.perf_counter() - start
    try:
        path = save(fast, out)
    except (UnsaveableEngine, OSError) as e:
        print(f"unet-fast export engine: error: {e}", file=sys.stderr)
        return 1
    data = fast.report_data()
    rows = ", ".join(sorted({s.isa for s in data.steps if s.isa})) or "-"
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB): backend {data.backend}, {data.dtype}, kernels "
          f"{rows}, {len(data.captures)} capture(s), built in {built:.1f} s; load it with unet_fast.load({str(path)!r}) "
          f"or `unet-fast segment --engine {path}`")  # fmt: skip
    return 0


def _onnx_input_shape(path: Path) -> tuple[int, ...]:
    """The ONNX input's static dims, with 1 for a symbolic batch and 256 for a symbolic H/W."""
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX file at {path}")
    import onnx

    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ValueError(f"{path}: expected a 4-D (N, C, H, W) input, the graph's has {len(dims)} dims")
    fallback = (1, 3, 256, 256)
    return tuple(d.dim_value if d.dim_value > 0 else fallback[i] for i, d in enumerate(dims))
