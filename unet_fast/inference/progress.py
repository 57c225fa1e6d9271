"""A tiny stderr progress bar (no tqdm dependency): redrawn in place on a terminal, one line per
finished item otherwise (so logs of scripted runs stay readable)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total: int, label: str = "", stream: TextIO | None = None, enabled: bool = True,
                 width: int = 28) -> None:  # fmt: skip
        self.total, self.label, self.width = max(total, 1), label, width
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.interactive = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self.done = 0

    def say(self, line: str) -> None:
        """A line of its own on the stream (e.g. a failure), never glued to the bar drawn in place: on a
        terminal the bar's line is cleared first and the bar is drawn again on the next update."""
        if self.interactive:
            self.stream.write("\r" + " " * 80 + "\r")
        self.stream.write(line + "\n")
        self.stream.flush()

    def update(self, done: float, note: str = "", partial: bool = False) -> None:
        """Set progress to `done` of `total` (fractions allowed); `note` says what was just finished.
        `partial` updates (within one item) are drawn on a terminal only, never logged as lines."""
        self.done = done
        if not self.enabled or (partial and not self.interactive):
            return
        frac = min(done / self.total, 1.0)
        bar = "#" * round(frac * self.width) + "-" * (self.width - round(frac * self.width))
        line = f"{self.label} [{bar}] {int(done)}/{self.total} {time.perf_counter() - self.start:.1f}s {note}"
        if self.interactive:
            self.stream.write("\r" + line[:200].ljust(80))
            if done >= self.total and not partial:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
