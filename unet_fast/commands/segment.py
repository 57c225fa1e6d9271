"""`unet-fast segment`: class-map PNGs and colour overlays for images, with sliding-window inference.

Exit codes (unet_fast/cli.py): 0 ok, 2 bad usage or input (missing file, unreadable image, wrong
channel count, bad option), 1 runtime failure (the engine or the model failed while running)."""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

GLOB_CHARS = set("*?[")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment",
        help="segment images: <name>_mask.png (class indices) and <name>_overlay.png per image, legend.json/png",
        description="Segment images with a U-Net (the bundled demo model unless --weights is given). "
        "IMAGE may be a file (PNG, TIFF, JPEG, BMP, .npy), a folder (its images, sorted) or a glob. "
        "Each image runs whole when it fits --memory-budget, else as exact halo tiles (the model's own answer "
        "at every pixel) when the model allows it, else as a blended sliding window (--mode forces one). "
        "Whole-slide images (tiled pyramidal TIFF / OME-TIFF / SVS, zarr, large .npy; or any input with --wsi) "
        "are streamed tile by tile into <name>_mask.ome.tif (docs/wsi.md).",
    )
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files, folders or glob patterns")
    p.add_argument("--demo", action="store_true", help="segment the bundled demo image (plus any IMAGE)")
    p.add_argument("--weights", default=None, help="state-dict file (default: the bundled demo U-Net)")
    p.add_argument("--card", default=None, help="model card JSON (default: the weights' name with .json)")
    p.add_argument("--out", default="segment-out", help="output folder (created; default: segment-out)")
    add_engine_options(p)
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of class colours (default 0.5)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
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
    from unet_fast.distributed import segment_cli  # --ray, --ray-address, --workers, --overwrite

    segment_cli.add_arguments(p)
    p.set_defaults(func=run)


def collect_images(specs: list[str]) -> list[Path]:
    """Files as given, folders -> their image files (sorted), globs expanded (sorted). Missing -> error."""
    from unet_fast.inference.image_io import IMAGE_SUFFIXES

    found: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not inside:
                raise FileNotFoundError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            found += inside
        elif path.is_file():
            found.append(path)
        elif GLOB_CHARS & set(spec):
            matches = sorted(Path(m) for m in glob.glob(spec, recursive=True) if Path(m).is_file())
            if not matches:
                raise FileNotFoundError(f"no files match {spec!r}")
            found += matches
        else:
            raise FileNotFoundError(f"image {spec} not found")
    return found


def output_names(images: list[Path]) -> list[str]:
    """`<stem>` per image; stems shared by several inputs get the suffix too (a.png, a.tif -> a_png, a_tif),
    so no output overwrites another."""
    stems = [p.stem for p in images]
    names = [
        f"{p.stem}_{p.suffix.lstrip('.').lower()}" if stems.count(p.stem) > 1 else p.stem for p in images
    ]
    seen: dict[str, int] = {}
    for i, n in enumerate(names):  # the same file or name given twice: number them
        if n in seen:
            seen[n] += 1
            names[i] = f"{n}_{seen[n]}"
        else:
            seen[n] = 1
    return names


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


def run(args: argparse.Namespace) -> int:
    from unet_fast.distributed import segment_cli

    # -- usage checks shared with the --ray path (ValueError / FileNotFoundError -> exit 2 in cli.main) ----
    ray = segment_cli.wants_ray(args)
    if not args.images and not args.demo:
        raise ValueError("no images given: pass IMAGE... (files, folders or globs), or --demo")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    if not 0 <= args.alpha <= 1:
        raise ValueError(f"--alpha must be in [0, 1], got {args.alpha}")
    if ray:
        return segment_cli.run(args)
    import torch

    from unet_fast.demo import bundled
    from unet_fast.inference.image_io import overlay, read_image, write_mask, write_rgb
    from unet_fast.inference.legend import format_legend, write_legend
    from unet_fast.inference.progress import Progress
    from unet_fast.inference.segmenter import Segmenter

    # -- input checks (ValueError / FileNotFoundError -> exit 2 in cli.main) ----------------------------
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    images = ([bundled.require(bundled.DEMO_IMAGE)] if args.demo else []) + collect_images(args.images)
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
                                   memory_budget=args.memory_budget << 20, tile=args.tile)  # fmt: skip
    except RuntimeError as e:
        print(f"unet-fast segment: error: {e}", file=sys.stderr)
        return 1
    say(
        f"model: {weights.name} ({seg.card.num_classes} classes, patch {seg.patch}); runs on: {seg.runner.note}"
    )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"unet-fast segment: error: cannot create --out {out_dir}: {e}", file=sys.stderr)
        return 1

    from unet_fast.inference.wsi import is_slide

    bar = Progress(len(images), "segment", enabled=not args.quiet)
    paths: dict[str, int] = {}
    written = 0
    for i, (path, name) in enumerate(zip(images, output_names(images), strict=True)):
        if args.wsi or is_slide(path):
            try:
                report = _segment_slide(seg, weights, path, name, out_dir, args)
            except (ValueError, FileNotFoundError):
                raise  # an unreadable slide or tile, a refused mode: bad input, exit 2 (partial results kept)
            except OSError as e:
                print(f"unet-fast segment: error: cannot write the outputs for {path}: {e}", file=sys.stderr)
                return 1
            key = f"{report.strategy} tiles (slide)"
            paths[key] = paths.get(key, 0) + 1
            written += 2
            bar.update(i + 1, f"{path.name} {report.shape[0]}x{report.shape[1]} -> {report.mask.name}")
            continue
        image = read_image(path)  # bad input -> ValueError -> exit 2
        try:
            mask = seg.segment(image, path, progress=_patch_ticker(bar, i, path.name))
        except ValueError:
            raise
        except Exception as e:  # the engine or model failed while running: a runtime failure
            print(f"unet-fast segment: error: inference failed on {path}: {type(e).__name__}: {e}",
                  file=sys.stderr)  # fmt: skip
            return 1
        try:
            write_mask(mask, seg.card.palette, out_dir / f"{name}_mask.png")
            write_rgb(overlay(image, mask, seg.card.palette, args.alpha), out_dir / f"{name}_overlay.png")
        except OSError as e:  # disk full, permissions: the environment failed, not the input
            print(f"unet-fast segment: error: cannot write the outputs for {path}: {e}", file=sys.stderr)
            return 1
        how = seg.last_strategy.mode if seg.last_strategy is not None else "blended"
        paths[how] = paths.get(how, 0) + 1
        written += 2
        bar.update(i + 1, f"{path.name} {image.shape[0]}x{image.shape[1]} ({how})")
    try:
        legend = write_legend(seg.card, out_dir)
    except OSError as e:
        print(f"unet-fast segment: error: cannot write the legend: {e}", file=sys.stderr)
        return 1
    how = ", ".join(f"{n} {k}" for k, n in paths.items())
    print(
        f"wrote {written} files for {len(images)} image(s) to {out_dir} ({seg.runner.note}; inference: {how})"
    )
    print(format_legend(seg.card))
    print(f"legend written to {', '.join(str(p) for p in legend)}")
    return 0


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
