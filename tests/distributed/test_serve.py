"""`unet-fast serve` (Ray Serve) on loopback: concurrent clients get the masks `Segmenter.segment` gives,
requests are batched (the deployment's /stats says so), bad images get 400 and oversized ones 413 while
the server keeps serving. One deployment for the module, shut down at the end; every request has a
timeout, so a hung server fails the test instead of the CI job."""

import io
import json
import socket
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from unet_fast.demo import bundled
from unet_fast.inference.image_io import read_image
from unet_fast.inference.segmenter import Segmenter

pytest.importorskip("ray.serve")

TIMEOUT = 60  # seconds per request, generous for a loaded 2-core machine
MAX_BYTES, MAX_PIXELS = 1 << 20, 300 * 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(ray_cluster):
    from ray import serve

    from unet_fast.distributed.serve import APP_NAME, build_app

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    # A long batch wait (1 s) so that concurrent test clients meet in one batch even on a loaded machine;
    # a full batch (8) leaves at once.
    app = build_app(bundled.DEMO_WEIGHTS, max_batch=8, batch_wait_ms=1000, max_bytes=MAX_BYTES,
                    max_pixels=MAX_PIXELS)  # fmt: skip
    serve.run(app, name=APP_NAME, route_prefix="/")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


def _post(url: str, body: bytes, query: str = "") -> tuple[int, dict, bytes]:
    request = urllib.request.Request(f"{url}/segment{query}", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _encode(array: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "npy":
        np.save(buf, array)
    else:
        Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def test_health(server) -> None:
    with urllib.request.urlopen(f"{server}/health", timeout=TIMEOUT) as r:
        info = json.loads(r.read())
    assert info["status"] == "ok" and info["class_names"][0] == "background" and info["patch"] == 128
    # the replica loaded the engine build_app wrote once (no capture, no packing in the replica)
    assert info["engine"] == "file" and "loaded from" in info["runs_on"] and info["startup_s"] > 0, info


def test_concurrent_clients_get_the_single_process_masks_in_batches(server, tmp_path) -> None:
    rng = np.random.default_rng(21)
    # Mostly patch-sized tiles (one patch each: the case batching pays for), a larger and a smaller image.
    shapes = [(128, 128)] * 6 + [(150, 170), (40, 90)]
    formats = ["PNG", "TIFF", "npy", "PNG", "npy", "TIFF", "PNG", "npy"]
    bodies, expected = [], []
    seg = Segmenter.from_files(bundled.DEMO_WEIGHTS)
    for i, (shape, fmt) in enumerate(zip(shapes, formats, strict=True)):
        array = rng.integers(0, 256, shape, dtype=np.uint8) if fmt != "npy" else rng.random(shape, np.float32)
        body = _encode(array, fmt)
        path = tmp_path / f"{i}.{'npy' if fmt == 'npy' else fmt.lower()}"
        path.write_bytes(body)
        bodies.append(body)
        expected.append(seg.segment(read_image(path)))
    start = threading.Barrier(len(bodies))

    def client(i: int):
        start.wait(timeout=TIMEOUT)
        return _post(server, bodies[i])

    with ThreadPoolExecutor(len(bodies)) as pool:
        replies = list(pool.map(client, range(len(bodies))))
    for (status, headers, body), mask in zip(replies, expected, strict=True):
        assert status == 200 and headers["content-type"] == "image/png"
        # the path (whole: these fit the memory budget) and where the time went inside the replica
        assert headers["x-inference"] == "whole"
        assert all(f"{k};dur=" in headers["server-timing"] for k in ("decode", "queue", "infer", "encode"))
        with Image.open(io.BytesIO(body)) as im:
            assert im.mode == "P"
            np.testing.assert_array_equal(np.array(im), mask)
    sizes = [int(h["x-batch-size"]) for _, h, _ in replies]
    with urllib.request.urlopen(f"{server}/stats", timeout=TIMEOUT) as r:
        stats = json.loads(r.read())
    assert max(sizes) > 1 and stats["max_batch_size"] > 1, (sizes, stats)
    assert stats["requests"] >= len(bodies) and stats["batches"] < stats["requests"]

    status, _, body = _post(server, bodies[6], "?format=json")
    fractions = np.bincount(expected[6].ravel(), minlength=5) / expected[6].size
    reply = json.loads(body)
    assert status == 200 and (reply["height"], reply["width"]) == (150, 170)
    np.testing.assert_allclose(reply["class_fractions"], fractions)


def test_bad_and_oversized_images_are_refused_and_the_server_keeps_serving(server) -> None:
    rng = np.random.default_rng(3)
    cases = {
        "not an image": (b"hello, server", 400, "not a PNG, TIFF"),
        "truncated PNG": (_encode(rng.integers(0, 256, (50, 50), np.uint8), "PNG")[:60], 400, "cannot read"),
        "5 channels": (_encode(rng.random((20, 20, 5), np.float32), "npy"), 400, "C in 1..4 channels"),
        "empty body": (b"", 400, "empty request body"),
        "too many pixels": (_encode(np.zeros((301, 300), np.uint8), "PNG"), 413, "more than the limit"),
        "too many bytes": (b"\x89PNG\r\n\x1a\n" + bytes(MAX_BYTES), 413, "more than the limit"),
    }
    for what, (body, code, words) in cases.items():
        status, _, reply = _post(server, body)
        assert status == code and words in json.loads(reply)["error"], (what, status, reply)
    status, _, reply = _post(server, body, "?format=xml")
    assert status == 400 and "format must be" in json.loads(reply)["error"]
    status, _, _ = _post(server, _encode(rng.integers(0, 256, (64, 64), np.uint8), "PNG"))
    assert status == 200
