"""Which input sizes the export checks its ONNX graph at, and what the tracer said while writing it.

Why: torch.onnx's tracer runs the model once, at the example's size, and bakes every Python decision on a
shape into the graph (MONAI's `UpCat` pads the upsampled side only `if` a 2x pooling floored an odd length;
at a 64x64 example no level is odd, so the pad is traced with zero amounts and a 33x32 input fails in
Concat). A graph declared dynamic in H/W is then only right at sizes that take the same decisions, e.g.
multiples of the model's total stride. The export therefore checks sizes that take *other* decisions:
`flipped(n)` has the opposite parity to `n` at each of the first `PROBE_BITS` 2x poolings.
"""

from __future__ import annotations

import linecache
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from unet_fast.models.unet import UNet

AXIS_INDEX = {"batch": 0, "height": 2, "width": 3}
# Pooling levels whose odd/even decisions the probes flip: a total stride up to 2**6 = 64 (U-Nets have 16
# or 32; a depth-6 nnU-Net 64).
PROBE_BITS = 6


def flipped(n: int, bits: int = PROBE_BITS) -> int:
    """The smallest length > `n` whose low `bits` bits are the complement of `n`'s: after each of the first
    `bits` 2x poolings (floor) it is odd where `n`'s is even and the reverse. 64 -> 127, 127 -> 128."""
    mask = (1 << bits) - 1
    t = (n & ~mask) | (~n & mask)
    return t if t > n else t + (1 << bits)


def _snap(model: nn.Module, length: int) -> int:
    """`length`, or for our UNet the next length it takes (valid-padding U-Nets take few)."""
    if not isinstance(model, UNet):
        return length
    for s in range(length, length + 256):
        try:
            model.output_size(s, s)
        except ValueError:
            continue
        return s
    return length


def probe_shapes(model: nn.Module, example_shape: Sequence[int], dynamic: Sequence[str]) -> list[tuple[int, ...]]:
    """The input shapes the export's parity check runs (the first is the example's): with dynamic H/W, one
    at `flipped` H and W (every pooling level's parity the opposite of the example's; batch + 1 where the
    batch is dynamic) and one at an odd size, not square where the example is (H + 17, W + 9); with a
    dynamic batch only, batch + 1. Only dynamic axes vary. Lengths our UNet does
    not take are moved to the next it takes; other models' refusals are recorded as skipped sizes."""
    n, c, h, w = (int(d) for d in example_shape)
    dyn = set(dynamic)
    nb = n + 1 if "batch" in dyn else n
    hd, wd = "height" in dyn, "width" in dyn
    shapes = [(n, c, h, w)]
    if hd or wd:
        shapes.append((nb, c, _snap(model, flipped(h)) if hd else h, _snap(model, flipped(w)) if wd else w))
        shapes.append((n, c, _snap(model, h + 17) if hd else h, _snap(model, w + 9) if wd else w))
    elif nb != n:
        shapes.append((nb, c, h, w))
    out: list[tuple[int, ...]] = []
    for s in shapes:
        if s not in out:
            out.append(s)
    return out


def profile_probe_shapes(lo: Sequence[int], opt: Sequence[int], hi: Sequence[int]) -> list[tuple[int, ...]]:
    """Shapes inside a TensorRT profile [lo, hi] to check the ONNX graph at: `opt` first, then per varying
    H/W axis the length in range whose low `PROBE_BITS` bits differ most from `opt`'s (closest to `opt` on
    a tie), with batch `opt + 1` where the profile allows; then `lo` and `hi` on H/W where they differ from
    what is already there. Batch, H and W vary only where the profile lets them."""
    opt_t = tuple(int(d) for d in opt)

    def far(axis: int) -> int:
        a, b, o = int(lo[axis]), int(hi[axis]), opt_t[axis]
        mask = (1 << PROBE_BITS) - 1
        return max(range(a, b + 1), key=lambda s: (bin((s ^ o) & mask).count("1"), -abs(s - o)))

    n, c = opt_t[:2]
    nb = n + 1 if n + 1 <= int(hi[0]) else (n - 1 if n - 1 >= int(lo[0]) else n)
    shapes = [opt_t, (nb, c, far(2), far(3))]
    shapes.append((n, c, int(lo[2]), int(hi[3])))
    out: list[tuple[int, ...]] = []
    for s in shapes:
        if s not in out:
            out.append(s)
    return out


def varying_axes(shape: Sequence[int], example_shape: Sequence[int], dynamic: Sequence[str]) -> list[str]:
    """The dynamic axes on which `shape` differs from the example's."""
    return [a for a in dynamic if int(shape[AXIS_INDEX[a]]) != int(example_shape[AXIS_INDEX[a]])]


def with_axis(example_shape: Sequence[int], shape: Sequence[int], axis: str) -> tuple[int, ...]:
    """The example's shape with `axis` taken from `shape`."""
    out = [int(d) for d in example_shape]
    out[AXIS_INDEX[axis]] = int(shape[AXIS_INDEX[axis]])
    return tuple(out)


@contextmanager
def tracer_notes() -> Iterator[list[str]]:
    """Silence the warnings torch.onnx.export raises and collect its TracerWarnings as "file:line: code"
    (unique, in order): the places where the trace turned a tensor value into a Python constant."""
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield notes
    seen = set()
    for w in caught:
        if not issubclass(w.category, torch.jit.TracerWarning) or (w.filename, w.lineno) in seen:
            continue
        seen.add((w.filename, w.lineno))
        code = linecache.getline(w.filename, w.lineno).strip()
        notes.append(f"{w.filename}:{w.lineno}" + (f" `{code}`" if code else ""))


_OURS = (str(Path(torch.__file__).parent), str(Path(__file__).resolve().parents[1]))


def user_code_notes(notes: Sequence[str]) -> list[str]:
    """The tracer notes from the model's own code: not torch's (its layers' input checks) and not unet_fast's
    (our export forms are traced at every size by the tests)."""
    return [_short(n) for n in notes if not n.startswith(_OURS)]


def _short(note: str) -> str:
    """'.../monai/networks/nets/basic_unet.py:167 `code`': the last three parts of the file's path."""
    where, _, rest = note.partition(" ")
    parts = Path(where).parts
    short = str(Path(*parts[-3:])) if len(parts) > 3 else where
    return (".../" if len(parts) > 3 else "") + short + (f" {rest}" if rest else "")
