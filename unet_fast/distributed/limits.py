"""Pixel-count limits for the distributed paths, checked from the file header before a single pixel is
decoded: a 100k x 100k TIFF must become an error row (or an HTTP 413), not an out-of-memory kill of the
worker that holds the model (`inference.batch.check_pixels` makes the check).

The memory check every reader makes (`Segmenter.check_fits`: the memory the image needs against the memory
available) comes on top. These fixed limits stay because several actors or requests share one node's
memory, and each sees only what is free when its image arrives."""

from __future__ import annotations

# 2**28 pixels (16384 x 16384): a whole-slide tile or satellite scene of that size takes ~8 GiB to segment
# with a 5-class model; bigger inputs should be tiled before they reach a worker.
DEFAULT_MAX_PIXELS = 1 << 28
