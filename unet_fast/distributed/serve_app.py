"""The Ray Serve deployment behind `unet-fast serve` (imports Ray: load it through unet_fast.distributed.serve,
which says how to install Ray when it is missing).

Each replica holds one Segmenter (one FusedUNet loaded from the engine file build_app wrote once, torch
threads = the replica's CPUs). Requests
are decoded concurrently on the replica's event loop, then `@serve.batch` groups up to `max_batch` of them
(waiting at most `batch_wait_ms` for the batch to fill) and `replay.segment_many` runs the patches of all
of them through the engine in full batches of patches, whatever their image sizes.

Routes: POST /segment (body: PNG / TIFF / JPEG / BMP / .npy bytes; ?format=png (default) -> the class-map
PNG, ?format=json -> class fractions), GET /health (what runs, this replica, how it got its engine and its
start-up seconds), GET /stats (this replica's batch sizes).
Errors: 400 bad image (reason in the body), 413 body over `max_bytes` or image over `max_pixels`.
"""

import asyncio
import json
import os
import time
from collections import Counter

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from ray import serve

from unet_fast.distributed.http_io import decode, mask_png
from unet_fast.distributed.replay import segment_many
from unet_fast.inference.masks import label_fractions, mask_labels, mask_palette
from unet_fast.inference.memory import ImageTooLargeError

app = FastAPI(title="unet_fast segmentation")


class _TooLarge(Exception):
    pass


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _timed(headers: dict, timing: dict, since: float) -> dict:
    """`headers` + Server-Timing: the stages' durations (seconds in `timing`, `encode` since `since`) in ms.
    Defined above the deployment: Serve pickles the class with the module globals it saw at definition."""
    timing = {**timing, "encode": time.perf_counter() - since}
    return {**headers, "Server-Timing": ", ".join(f"{k};dur={1000 * v:.2f}" for k, v in timing.items())}


@serve.deployment(name="unet_fast")
@serve.ingress(app)
class SegmentDeployment:
    def __init__(self, weights: str, card: str | None, segmenter_kwargs: dict, threads: int, max_batch: int,
                 batch_wait_s: float, max_bytes: int, max_pixels: int | None) -> None:  # fmt: skip
        import torch

        from unet_fast.inference.segmenter import Segmenter

        start = time.perf_counter()
        torch.set_num_threads(max(1, threads))
        # segmenter_kwargs["engine"]: the file build_app wrote once (distributed/engines.py): loaded, not rebuilt
        self.seg = Segmenter.from_files(weights, card, **segmenter_kwargs)
        self.startup_s = time.perf_counter() - start
        self.replica = f"{os.uname().nodename}:{os.getpid()}"
        self.max_bytes, self.max_pixels = max_bytes, max_pixels
        self._batch.set_max_batch_size(max_batch)
        self._batch.set_batch_wait_timeout_s(batch_wait_s)
        self.batch_sizes: Counter[int] = Counter()  # batch size -> how many batches had it
        self.model_calls = 0
        self.name = os.path.basename(weights)

    @app.get("/health")
    async def health(self) -> dict:
        card = self.seg.card
        return {"status": "ok", "model": self.name, "runs_on": self.seg.runner.note, "patch": self.seg.patch,
                "in_channels": card.in_channels, "class_names": card.class_names, "replica": self.replica,
                "engine": self.seg.runner.origin or "reference", "startup_s": self.startup_s}  # fmt: skip

    @app.get("/stats")
    async def stats(self) -> dict:
        """This replica's batching so far: {"requests", "batches", "max_batch_size", "model_calls",
        "batch_sizes": {size: count}}."""
        return {"requests": sum(k * v for k, v in self.batch_sizes.items()), "batches": self.batch_sizes.total(),
                "max_batch_size": max(self.batch_sizes, default=0), "model_calls": self.model_calls,
                "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())}}  # fmt: skip

    @app.post("/segment")
    async def segment(self, request: Request, format: str = "png") -> Response:
        if format not in ("png", "json"):
            return _error(400, f"format must be 'png' or 'json', got {format!r}")
        try:
            body = await self._read_body(request)
        except _TooLarge as e:
            return _error(413, str(e))
        t0 = time.perf_counter()
        try:
            image = await asyncio.to_thread(decode, body, self.seg.card.in_channels, self.max_pixels,
                                            self.seg.check_fits)  # fmt: skip
        except ImageTooLargeError as e:
            return _error(413, str(e))
        except ValueError as e:
            return _error(400, str(e))
        t1 = time.perf_counter()
        mask, batch_size, infer_s, path = await self._batch(image)
        t2 = time.perf_counter()
        # Server-Timing (the standard header): where this request's time went inside the replica; the rest of
        # what a client measures is HTTP, Serve's proxy and its handle
        timing = {"decode": t1 - t0, "queue": max(0.0, t2 - t1 - infer_s), "infer": infer_s}
        headers = {"X-Batch-Size": str(batch_size), "X-Backend": self.seg.runner.backend, "X-Inference": path}
        card = self.seg.card
        if format == "json":  # the labels of the mask: classes, background / foreground, or bits
            body = {"height": int(mask.shape[0]), "width": int(mask.shape[1]),
                    "class_names": [label.name for label in mask_labels(card)],
                    "class_fractions": label_fractions(mask, card), "batch_size": batch_size}  # fmt: skip
            return Response(
                json.dumps(body), media_type="application/json", headers=_timed(headers, timing, t2)
            )
        png = mask_png(mask, mask_palette(card))
        return Response(png, media_type="image/png", headers=_timed(headers, timing, t2))

    async def _read_body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise _TooLarge(f"the body has {declared} bytes, more than the limit of {self.max_bytes}")
        chunks, size = [], 0
        async for chunk in request.stream():  # no Content-Length (chunked): count while reading
            size += len(chunk)
            if size > self.max_bytes:
                raise _TooLarge(f"the body has more than the limit of {self.max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)  # both reset from the options in __init__
    async def _batch(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, int, float, str]]:
        # The engine runs in a thread: the event loop keeps decoding requests (and forming the next batch).
        start = time.perf_counter()
        masks, calls = await asyncio.to_thread(segment_many, self.seg, images)
        infer = time.perf_counter() - start
        self.batch_sizes[len(images)] += 1
        self.model_calls += calls
        paths = [self.seg.strategy(int(im.shape[0]), int(im.shape[1])).mode for im in images]
        return [(m, len(images), infer, p) for m, p in zip(masks, paths, strict=True)]
