"""`unet-fast segment`: masks and colour overlays for images: the whole image, exact halo tiles or the
blended sliding window per image (Segmenter.strategy), whole-slide images streamed tile by tile (docs/wsi.md).

Exit codes (unet_fast/commands/__init__.py), the same with and without --ray:
  0  every input segmented and written
  1  the run could not go on (the engine could not be built for an explicit backend; --out cannot be
     created; the legend cannot be written; with --ray: Ray missing or no cluster at --ray-address)
  2  bad usage, nothing done (no images, a path or glob naming nothing, a bad option, bad weights or card)
  3  some inputs failed (unreadable, too large for the memory, wrong channel count, an output that cannot
     be written, the engine failing on it): each is named on stderr; every other input was done."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from unet_fast.commands import EXIT_FAILURE, EXIT_INPUTS_FAILED, EXIT_OK, segment_ray


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment",
        help="segment images: <name>_mask.png (class indices) and <name>_overlay.png per image, legend.json/png",
        description="Segment images with a U-Net (the bundled demo model unless --weights is given). "
        "IMAGE may be a file (PNG, TIFF, JPEG, BMP, WebP, .npy), a folder (its images, sorted) or a glob. "
        "Each image runs whole when it fits --memory-budget, else as exact halo tiles (the model's own answer "
        "at every pixel) when the model allows it, else as a blended sliding window (--mode forces one). "
        "Whole-slide images (tiled pyramidal TIFF / OME-TIFF / SVS, zarr, large .npy; or any input with --wsi) "
        "are streamed tile by tile into <name>_mask.ome.tif (docs/wsi.md). "
        "EXIF orientation is applied (masks come in the displayed orientation). An input that fails is "
        "named on stderr and the others are done: exit code 3 (0 all done, 1 the run could not go on, "
        "2 bad usage).",
    )
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files, folders or glob patterns")
    p.add_argument("--demo", action="store_true", help="segment the bundled demo image (plus any IMAGE)")
    p.add_argument("--weights", default=None, help="state-dict file (default: the bundled demo U-Net)")
    p.add_argument("--card", default=None, help="model card JSON (default: the weights' name with .json)")
    p.add_argument("--out", default="segment-out", help="output folder (created; default: segment-out)")
    add_engine_options(p)
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of class colours (default 0.5)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr (failed inputs are still named)")
    g = p.add_argument_group("whole-slide images (docs/wsi.md)")
    g.add_argument("--wsi", action="store_true",
                   help="stream every input tile by tile into <name>_mask.ome.tif (default: only tiled pyramidal "
                   "TIFFs, zarr, OpenSlide formats and inputs over 1 GiB decoded)")  # fmt: skip
    g.add_argument("--skip-background", type=float, default=None, metavar="THR",
                   help="slides: leave tiles without foreground (a channel more than THR, unit range, from the "
                   "background level) as class 0 without running the model (default: off)")  # fmt: skip
    g.add_argument(
        "--probabilities",
        action="store_true",
        help="slides: also write <name>_probabilities.ome.tif (uint8 = 255 p, a plane per class)",
    )
    segment_ray.add_arguments(p)
    p.set_defaults(func=run)


def add_engine_options(p: argparse.ArgumentParser) -> None:
    """The engine and sliding-window options `segment` and `serve` share."""
    p.add_argument("--backend", default="auto",
                   help="engine backend for unet_fast.optimize (auto, cpu, triton, cuda, torch), or "
                   "'reference' for the plain PyTorch model; auto falls back to reference (default: auto)")  # fmt: skip
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                   help="engine storage dtype; float16 needs a GPU backend, bfloat16 runs on the GPU backends "
                   "and on cpu (bf16 tile kernels) (default: float32)")  # fmt: skip
    p.add_argument("--patch-size", type=int, default=None, help="sliding-window patch (default: the card's)")
    p.add_argument(
        "--overlap", type=float, default=0.5, help="patch overlap fraction in [0, 1) (default 0.5)"
    )
    p.add_argument("--batch-size", type=int, default=4, help="patches / tiles per model call (default 4)")
    p.add_argument("--mode", default="auto", choices=("auto", "whole", "exact", "blended"),
                   help="auto: the whole image when it fits --memory-budget, else exact halo tiles where the model "
                   "is exact under tiling, else the blended window; or force one (default: auto)")  # fmt: skip
    p.add_argument("--memory-budget", type=int, default=2048, metavar="MIB",
                   help="activation memory one whole-image call may take, in MiB (default 2048)")  # fmt: skip
    p.add_argument("--tile", type=int, default=512, help="output pixels per exact tile side (default 512)")
    p.add_argument("--engine", default=None, metavar="FILE.ufe",
                   help="an engine file made from these weights (unet-fast export engine): loaded instead of "
                   "building the engine; with --ray / serve every worker loads it (default: the engine is built, "
                   "once on the driver for --ray and serve)")  # fmt: skip


def check_engine_file(engine: str | None) -> None:
    """--engine names a file the user made: a missing path or a folder is a usage error (exit 2), not a silent
    rebuild. (A file that exists but does not fit these weights / options is built instead; the "runs on"
    line says why.)"""
    if engine is None:
        return
    path = Path(engine)
    if path.is_dir():
        raise ValueError(f"--engine {engine} is a folder; give the engine file (unet-fast export engine --out m.ufe)")
    if not path.is_file():
        raise FileNotFoundError(f"--engine {engine}: no such file (make one with unet-fast export engine --weights "
                                "W.pt --out m.ufe)")  # fmt: skip


def input_specs(args: argparse.Namespace) -> list[str]:
    """The IMAGE arguments, with the bundled demo image first for --demo."""
    from unet_fast.demo import bundled

    return ([str(bundled.require(bundled.DEMO_IMAGE))] if args.demo else []) + list(args.images)


def run(args: argparse.Namespace) -> int:
    # -- usage checks shared with the --ray path (ValueError / FileNotFoundError -> exit 2 in cli.main) ----
    ray = segment_ray.wants_ray(args)
    if not args.images and not args.demo:
        raise ValueError("no images given: pass IMAGE... (files, folders or globs), or --demo")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    if not 0 <= args.alpha <= 1:
        raise ValueError(f"--alpha must be in [0, 1], got {args.alpha}")
    check_engine_file(args.engine)
    if ray:
        return segment_ray.run(args, input_specs(args))
    import torch

    from unet_fast.demo import bundled
    from unet_fast.inference.batch import collect_images, segment_paths
    from unet_fast.inference.legend import format_legend, write_legend
    from unet_fast.inference.progress import Progress
    from unet_fast.inference.segmenter import Segmenter

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    images = collect_images(input_specs(args))  # a spec naming nothing: FileNotFoundError -> exit 2
    weights = Path(args.weights) if args.weights else bundled.require(bundled.DEMO_WEIGHTS)
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} exists and is not a folder")
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))

    if args.memory_budget < 1 or args.tile < 16:
        raise ValueError(
            f"--memory-budget must be >= 1 MiB and --tile >= 16, got {args.memory_budget}, {args.tile}"
        )
    try:
        seg = Segmenter.from_files(weights, args.card, backend=args.backend, dtype=args.dtype,
                                   patch_size=args.patch_size, overlap=args.overlap,
                                   batch_size=args.batch_size, mode=args.mode,
                                   memory_budget=args.memory_budget << 20, tile=args.tile,
                                   engine=args.engine)  # fmt: skip
    except RuntimeError as e:
        print(f"unet-fast segment: error: {e}", file=sys.stderr)
        return EXIT_FAILURE
    say(
        f"model: {weights.name} ({seg.card.num_classes} classes, patch {seg.patch}); runs on: {seg.runner.note}"
    )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"unet-fast segment: error: cannot create --out {out_dir}: {e}", file=sys.stderr)
        return EXIT_FAILURE

    from unet_fast.inference.wsi import is_slide

    bar = Progress(len(images), "segment", enabled=not args.quiet)

    def said(i: int, result) -> None:  # each input as it finishes; a failure by name, at once
        if not result.ok:  # on stderr even with --quiet: the exit code says some failed, this says which
            bar.say(f"unet-fast segment: failed: {result.input}: {result.error}")
        done = f"{result.height}x{result.width} ({result.strategy})" if result.ok else "FAILED"
        bar.update(i + 1, f"{result.input.name} {done}")

    def slide(path: Path, name: str):
        return _segment_slide(seg, weights, path, name, out_dir, args)

    report = segment_paths(seg, images, out_dir, alpha=args.alpha, on_result=said,
                           progress=lambda i, path: _patch_ticker(bar, i, path.name),
                           slide=slide, wants_slide=lambda path: args.wsi or is_slide(path))  # fmt: skip
    try:
        legend = write_legend(seg.card, out_dir)
    except OSError as e:
        print(f"unet-fast segment: error: cannot write the legend: {e}", file=sys.stderr)
        return EXIT_FAILURE
    n, ok = len(report.results), report.ok
    how = report.strategies()
    how = f"; inference: {', '.join(f'{v} {k}' for k, v in how.items())}" if how else ""
    if report.failed:
        print(f"wrote {report.written} files for {ok} of {n} image(s) to {out_dir} ({seg.runner.note}{how}); "
              f"{report.failed} failed (listed on stderr)")  # fmt: skip
    else:
        print(f"wrote {report.written} files for {ok} image(s) to {out_dir} ({seg.runner.note}{how})")
    print(format_legend(seg.card))
    print(f"legend written to {', '.join(str(p) for p in legend)}")
    return EXIT_INPUTS_FAILED if report.failed else EXIT_OK


def _segment_slide(seg, weights: Path, path: Path, name: str, out_dir: Path, args: argparse.Namespace):
    """One whole-slide input through `wsi.segment_slide` with this run's model and options."""
    from unet_fast.inference.wsi import SlideModel, SlideSettings, model_identity, segment_slide

    options = {"backend": args.backend, "dtype": args.dtype, "patch_size": args.patch_size, "overlap": args.overlap,
               "batch_size": args.batch_size}  # fmt: skip
    model = SlideModel.from_segmenter(seg, model_identity(weights, seg.card.to_json(), options))
    mode = "exact" if args.mode == "whole" else args.mode  # a slide is never run whole
    settings = SlideSettings(mode=mode, core=max(256, args.tile // 256 * 256), batch_size=args.batch_size,
                             probabilities=args.probabilities, tissue_threshold=args.skip_background)  # fmt: skip
    return segment_slide(path, model, out_dir, name=name, settings=settings, progress=not args.quiet)


def _patch_ticker(bar, index: int, name: str):
    """Progress within one image (per batch of patches), drawn only on a terminal."""
    return lambda done, total: bar.update(index + done / total, f"{name}: patch batch {done}/{total}", True)
