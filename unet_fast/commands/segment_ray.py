"""The `--ray` half of `unet-fast segment`: its options and the run over
`unet_fast.distributed.segment_dataset`. Kept apart so that commands/segment.py only registers the flags and
hands over; the library (unet_fast/distributed/) knows nothing of the command line.

Exit codes: those of `segment` (unet_fast/commands/segment.py): 0 every input done, 3 some inputs failed
(each printed, all in manifest.parquet), 1 Ray missing or the job could not start, 2 bad usage."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from unet_fast.commands import EXIT_FAILURE, EXIT_INPUTS_FAILED, EXIT_OK

SHOWN_FAILURES = 20  # failures printed on stderr; the manifest has them all


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group('Ray (pip install "unet_fast[ray]"; docs/distributed.md)')
    g.add_argument("--ray", action="store_true",
                   help="run on Ray Data: an actor pool, one engine per actor; failed inputs become manifest "
                   "rows (manifest.parquet in --out), exit code 3 as without --ray")  # fmt: skip
    g.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="join this Ray cluster ('auto', 'ray://head:10001'; implies --ray; default: start a "
                   "local Ray)")  # fmt: skip
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="Ray actors, each with --threads CPUs (default 1) (default: the cluster's CPUs / "
                   "--threads)")  # fmt: skip
    g.add_argument("--overwrite", action="store_true",
                   help="with --ray: redo inputs a previous run finished with the same weights (default: skip "
                   "them)")  # fmt: skip


def wants_ray(args: argparse.Namespace) -> bool:
    """True when this `segment` run is a Ray run; ValueError for Ray-only flags without --ray."""
    if args.ray or args.ray_address:
        return True
    if args.workers is not None or args.overwrite:
        raise ValueError("--workers and --overwrite need --ray (or --ray-address)")
    return False


def run(args: argparse.Namespace, specs: list[str]) -> int:
    """Run `segment_dataset` over `specs` (the IMAGE arguments, the demo image first for --demo). Usage
    (images given, --threads, --alpha) was checked by commands/segment.run before it handed over."""
    from unet_fast.demo import bundled
    from unet_fast.distributed import segment_dataset
    from unet_fast.distributed.ray_env import RayMissingError

    weights = Path(args.weights) if args.weights else bundled.require(bundled.DEMO_WEIGHTS)
    slides, specs = _split_slides(specs, args)
    failed_slides = 0
    for slide in slides:  # whole-slide inputs: their tiles over the actor pool (docs/wsi.md)
        code = _run_slide(slide, weights, args)
        if code == EXIT_FAILURE:
            return code  # Ray missing or unreachable: nothing else can run either
        failed_slides += code == EXIT_INPUTS_FAILED
    if not specs:
        return EXIT_INPUTS_FAILED if failed_slides else EXIT_OK
    try:
        report = segment_dataset(
            specs, weights, args.out, card=args.card, address=args.ray_address, workers=args.workers,
            cpus_per_worker=args.threads or 1, batch_size=args.batch_size, backend=args.backend,
            dtype=args.dtype, patch_size=args.patch_size, overlap=args.overlap, overlay=True,
            alpha=args.alpha, overwrite=args.overwrite, progress=not args.quiet, mode=args.mode,
            engine=args.engine,
        )  # fmt: skip
    except (RayMissingError, RuntimeError) as e:  # Ray missing, no cluster at --ray-address
        print(f"unet-fast segment: error: --ray: {e}", file=sys.stderr)
        return EXIT_FAILURE
    for path, error in report.failures[:SHOWN_FAILURES]:
        print(f"unet-fast segment: failed: {path}: {error}", file=sys.stderr)
    if report.failed > SHOWN_FAILURES:
        print(f"unet-fast segment: ... and {report.failed - SHOWN_FAILURES} more (see {report.manifest})",
              file=sys.stderr)  # fmt: skip
    print(f"segmented {report.total} image(s) on Ray ({report.workers} workers): {report.ok} ok, "
          f"{report.failed} failed, {report.resumed} already done; {report.seconds:.1f}s; manifest "
          f"{report.manifest}")  # fmt: skip
    if report.engine and not args.quiet:
        print(f"engine: {report.engine}", file=sys.stderr)
    return EXIT_INPUTS_FAILED if report.failed or failed_slides else EXIT_OK


def _split_slides(images: list[str], args: argparse.Namespace) -> tuple[list[Path], list[str]]:
    """Files given by name that are whole-slide inputs (or all files with --wsi) apart from the rest (folders
    and globs go to the image job as before)."""
    from unet_fast.inference.wsi import is_slide

    slides, rest = [], []
    for spec in images:
        path = Path(spec)
        if (path.is_file() and (args.wsi or is_slide(path))) or (
            path.is_dir() and path.suffix.lower() == ".zarr"
        ):
            slides.append(path)
        else:
            rest.append(spec)
    return slides, rest


def _run_slide(path: Path, weights: Path, args: argparse.Namespace) -> int:
    from unet_fast.distributed.ray_env import RayMissingError
    from unet_fast.inference.wsi import SlideSettings

    mode = "exact" if args.mode == "whole" else args.mode  # a slide is never run whole
    settings = SlideSettings(mode=mode, core=max(256, args.tile // 256 * 256), batch_size=args.batch_size,
                             probabilities=args.probabilities, tissue_threshold=args.skip_background)  # fmt: skip
    try:
        from unet_fast.distributed.wsi_ray import segment_slide_ray

        report = segment_slide_ray(path, weights, args.out, card=args.card, settings=settings, address=args.ray_address,
                                   workers=args.workers, cpus_per_worker=args.threads or 1, backend=args.backend,
                                   dtype=args.dtype, patch_size=args.patch_size, overlap=args.overlap,
                                   progress=not args.quiet, engine=args.engine)  # fmt: skip
    except (RayMissingError, RuntimeError) as e:
        print(f"unet-fast segment: error: --ray: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as e:  # a bad slide (unreadable tile, refused mode...) is that input's failure
        print(f"unet-fast segment: failed: {path}: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_INPUTS_FAILED
    print(f"segmented slide {path} on Ray: {report.strategy} tiles ({report.computed} computed, {report.skipped} "
          f"skipped, {report.resumed} already done) -> {report.mask}")  # fmt: skip
    return EXIT_OK
