"""Many image files through one `Segmenter`: listing the inputs, naming the outputs, and segmenting each
file so that one bad input never loses the others' work.

Used by `unet-fast segment` (one process), by `Segmenter.segment_files` (the Python API) and, per input,
by the Ray workers of `segment --ray` (unet_fast/distributed/worker.py), so the three agree on names, bytes
and what counts as a failure:

- `collect_images`: command-line specs (files, folders, globs) -> input paths. A spec that names nothing
  (a missing path, a glob matching nothing, a folder without images) is a usage error (FileNotFoundError),
  raised before any work. Inside a folder, every entry with an image suffix is an input, including one
  that is not a regular file (a directory named `x.png`): it fails by name instead of vanishing.
- `output_names`: `<stem>`, made unique (a.png + a.tif -> a_png, a_tif).
- `segment_file`: read (header checks first: size against memory, `max_pixels`), segment, write the mask
  (and overlay) through a temporary name; any exception becomes the result's `error`, and what this
  input had written in this run is removed (no mask without its overlay, no truncated file).
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from unet_fast.inference.image_io import IMAGE_SUFFIXES, overlay, read_image, write_mask, write_rgb
from unet_fast.inference.masks import ModelCard, label_fractions, mask_palette
from unet_fast.inference.memory import ImageHeader, ImageTooLargeError


class Segmenter(Protocol):
    """What a batch reads of inference/segmenter.Segmenter (which calls this module from segment_files: a
    Protocol instead of an import keeps the two out of an import cycle)."""

    card: ModelCard
    last_strategy: Any  # tiled_inference.Strategy | None: the path the last image took

    def segment(self, image: np.ndarray, name: str | Path = ...,
                progress: Callable[[int, int], None] | None = ...) -> np.ndarray: ...  # fmt: skip

    def check_fits(self, header: ImageHeader, overlay: bool = ...) -> None: ...


class SlideReport(Protocol):
    """What a batch reads of inference/wsi.SlideReport (the whole-slide path's result)."""

    mask: Path
    metadata: Path
    probabilities: Path | None
    strategy: str
    shape: tuple[int, int]

GLOB_CHARS = set("*?[")


def collect_images(specs: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders -> their entries with an image suffix (sorted, not recursive), globs
    expanded (sorted; `**` recursive). FileNotFoundError for a spec that names nothing."""
    found: list[Path] = []
    for spec in map(str, specs):
        path = Path(spec)
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not inside:
                raise FileNotFoundError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            found += inside
        elif path.exists():
            found.append(path)
        elif GLOB_CHARS & set(spec):
            matches = sorted(Path(m) for m in glob.glob(spec, recursive=True)
                             if Path(m).is_file() or Path(m).suffix.lower() in IMAGE_SUFFIXES)  # fmt: skip
            if not matches:
                raise FileNotFoundError(f"no files match {spec!r}")
            found += matches
        else:
            raise FileNotFoundError(f"image {spec} not found")
    return found


def output_names(images: Sequence[Path]) -> list[str]:
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


def check_pixels(header: ImageHeader, max_pixels: int | None) -> None:
    """ImageTooLargeError when the header says the image has more than `max_pixels` pixels (a policy limit
    on top of the memory check: `segment --ray` and `serve` set one)."""
    if max_pixels is not None and header.pixels > max_pixels:
        raise ImageTooLargeError(f"{header.path.name}: the image has {header.pixels} pixels, more than the "
                                 f"limit of {max_pixels} (max_pixels)")  # fmt: skip


def mask_path(out_dir: Path, name: str) -> Path:
    return out_dir / f"{name}_mask.png"


def overlay_path(out_dir: Path, name: str) -> Path:
    return out_dir / f"{name}_overlay.png"


@dataclass
class FileResult:
    """What happened to one input. `error`: "<ExceptionType>: <message>" when it failed (then this run left
    no output of it behind). `class_fractions`: per mask label (masks.mask_labels), as in the Ray manifest."""

    input: Path
    name: str
    error: str | None = None
    height: int | None = None
    width: int | None = None
    channels: int | None = None
    class_fractions: list[float] | None = None
    mask: Path | None = None
    overlay: Path | None = None
    seconds: float = 0.0
    strategy: str | None = None  # the path it took: whole | exact | blended, or "<exact|blended> tiles (slide)"
    written: list[Path] = field(default_factory=list)  # every file written for it

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class BatchReport:
    """Every input's result, in input order, and the legend files written beside them."""

    results: list[FileResult] = field(default_factory=list)
    legend: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return sum(r.ok for r in self.results)

    @property
    def failed(self) -> int:
        return len(self.results) - self.ok

    @property
    def failures(self) -> list[tuple[Path, str]]:
        return [(r.input, r.error or "") for r in self.results if not r.ok]

    @property
    def written(self) -> int:
        """Files written for the inputs (the legend not counted)."""
        return sum(len(r.written) for r in self.results if r.ok)

    def strategies(self) -> dict[str, int]:
        """How many inputs took each inference path (Segmenter.strategy; slides by their tiles)."""
        counts: dict[str, int] = {}
        for r in self.results:
            if r.ok and r.strategy:
                counts[r.strategy] = counts.get(r.strategy, 0) + 1
        return counts


def write_atomically(write: Callable[[Path], None], path: Path) -> None:
    """Write through a temporary name in the same folder and rename: a process killed mid-write leaves no
    truncated file under the real name. The suffix stays .png (Pillow picks the format by it)."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:  # said of the file the user knows, not of our temporary name
        if e.errno is None:  # an encoder's own error: no errno, the message is the reason
            raise OSError(f"cannot write {path}: {e}") from None
        raise type(e)(e.errno, f"cannot write {path}: {e.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)


def segment_file(seg: Segmenter, path: str | Path, name: str, out_dir: str | Path, *, overlay_image: bool = True,
                 alpha: float = 0.5, max_pixels: int | None = None,
                 progress: Callable[[int, int], None] | None = None) -> FileResult:  # fmt: skip
    """Read, segment and write one input: `<name>_mask.png` (and `<name>_overlay.png`) in `out_dir`.
    Never raises for a bad input (unreadable, too large, wrong channel count, an output it cannot write,
    the engine failing on it): the exception's type and message go into the result's `error`. Only
    KeyboardInterrupt / SystemExit pass."""
    path, out_dir = Path(path), Path(out_dir)
    result = FileResult(path, name)
    start = time.perf_counter()
    written: list[Path] = []

    def check(header: ImageHeader) -> None:
        check_pixels(header, max_pixels)
        seg.check_fits(header, overlay=overlay_image)

    try:
        image = read_image(path, check=check)
        result.height, result.width, result.channels = (int(v) for v in image.shape)
        mask = seg.segment(image, path, progress)
        palette = mask_palette(seg.card)
        target = mask_path(out_dir, name)
        write_atomically(lambda p: write_mask(mask, palette, p), target)
        written.append(target)
        if overlay_image:
            rgb = overlay(image, mask, palette, alpha)
            del image
            target = overlay_path(out_dir, name)
            write_atomically(lambda p: write_rgb(rgb, p), target)
            written.append(target)
        result.class_fractions = label_fractions(mask, seg.card)
        result.mask = written[0]
        result.overlay = written[1] if overlay_image else None
        result.written = list(written)
        result.strategy = seg.last_strategy.mode if seg.last_strategy is not None else None
    except Exception as e:  # one bad input is that input's failure, never the end of the batch
        result.error = f"{type(e).__name__}: {e}"
        for p in written:  # no half of an input's outputs: a mask exists only for a finished input
            p.unlink(missing_ok=True)
    result.seconds = time.perf_counter() - start
    return result


def slide_file(slide: Callable[[Path, str], SlideReport], path: Path, name: str) -> FileResult:
    """One whole-slide input through `slide(path, name)` (wsi.segment_slide with the run's model): its
    failure, like any input's, is recorded in the result, never raised (a partial slide keeps its tile
    store for a resume, and no `<name>_wsi.json` claims it complete)."""
    result = FileResult(path, name)
    start = time.perf_counter()
    try:
        report = slide(path, name)
        result.height, result.width = report.shape
        result.mask = report.mask
        result.written = [p for p in (report.mask, report.metadata, report.probabilities) if p is not None]
        result.strategy = f"{report.strategy} tiles (slide)"
    except Exception as e:  # one bad slide is that input's failure, never the end of the batch
        result.error = f"{type(e).__name__}: {e}"
    result.seconds = time.perf_counter() - start
    return result


def segment_paths(seg: Segmenter, images: Sequence[Path], out_dir: Path, *, overlay: bool = True,
                  alpha: float = 0.5, max_pixels: int | None = None,
                  on_result: Callable[[int, FileResult], None] | None = None,
                  progress: Callable[[int, Path], Callable[[int, int], None] | None] | None = None,
                  slide: Callable[[Path, str], SlideReport] | None = None,
                  wants_slide: Callable[[Path], bool] | None = None) -> BatchReport:  # fmt: skip
    """`segment_file` for each of the listed `images` (see `collect_images`) into the existing folder
    `out_dir`, named by `output_names`. `on_result(index, result)` is called after each input;
    `progress(index, path)` may return a per-patch progress callback for that input. Inputs for which
    `wants_slide(path)` is true go through `slide(path, name)` (the whole-slide path, `slide_file`). Never
    raises for an input."""
    report = BatchReport()
    for i, (path, name) in enumerate(zip(images, output_names(images), strict=True)):
        if slide is not None and wants_slide is not None and wants_slide(path):
            result = slide_file(slide, path, name)
            report.results.append(result)
            if on_result is not None:
                on_result(i, result)
            continue
        ticker = progress(i, path) if progress is not None else None
        result = segment_file(seg, path, name, out_dir, overlay_image=overlay, alpha=alpha, max_pixels=max_pixels,
                              progress=ticker)  # fmt: skip
        report.results.append(result)
        if on_result is not None:
            on_result(i, result)
    return report


def segment_files(seg: Segmenter, inputs: Sequence[str | Path], out_dir: str | Path, *, overlay: bool = True,
                  alpha: float = 0.5, max_pixels: int | None = None,
                  on_result: Callable[[int, FileResult], None] | None = None,
                  progress: Callable[[int, Path], Callable[[int, int], None] | None] | None = None) -> BatchReport:  # fmt: skip
    """Segment every input (files, folders, globs: `collect_images`) with `seg` into `out_dir` (created),
    writing `<name>_mask.png` and, with `overlay`, `<name>_overlay.png` per input (`output_names`), then
    the legend (legend.json, legend.png): what `unet-fast segment` writes. Every readable input is done;
    each failure is a result with its error (`BatchReport.failures`). `on_result`, `progress`: see
    `segment_paths`.

    Raises (before any work) FileNotFoundError for a spec that names nothing, ValueError for a bad `alpha`
    or an `out_dir` that is a file, OSError when `out_dir` cannot be created; OSError (after the inputs)
    when the legend cannot be written."""
    from unet_fast.inference.legend import write_legend

    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    images = collect_images(inputs)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output folder {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    report = segment_paths(seg, images, out, overlay=overlay, alpha=alpha, max_pixels=max_pixels,
                           on_result=on_result, progress=progress)  # fmt: skip
    report.legend = write_legend(seg.card, out)
    return report
