"""`unet-fast serve`: an HTTP endpoint for segmentation on Ray Serve, with dynamic batching.

Exit codes (unet_fast/cli.py): 0 stopped with Ctrl-C / SIGTERM, 1 Ray missing or the server failed,
2 bad usage or input (missing weights, bad option)."""

from __future__ import annotations

import argparse
import sys

from unet_fast.commands.segment import add_engine_options, check_engine_file


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="HTTP segmentation server on Ray Serve (POST /segment), batching concurrent requests",
        description='Serve a U-Net over HTTP on Ray Serve (pip install "unet_fast[ray]"). POST an image '
        "(PNG, TIFF, JPEG, BMP or .npy bytes) to /segment: the reply is the class-map PNG (pixel value = "
        "class index), or JSON class fractions with ?format=json. GET /health, GET /stats (batch sizes). "
        "Bad images get 400 with the reason, bodies over --max-bytes or images over --max-pixels 413. "
        "See docs/distributed.md.",
    )
    p.add_argument("--weights", default=None, help="state-dict file (default: the bundled demo U-Net)")
    p.add_argument("--card", default=None, help="model card JSON (default: the weights' name with .json)")
    p.add_argument("--replicas", type=int, default=1, help="model replicas (default 1)")
    p.add_argument("--threads", type=int, default=1, help="CPUs and torch threads per replica (default 1)")
    p.add_argument("--max-batch", type=int, default=8, help="most requests per batch (default 8)")
    p.add_argument("--batch-wait-ms", type=float, default=5.0,
                   help="longest wait for a batch to fill, in ms (default 5)")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="deploy on this Ray cluster ('auto', 'ray://head:10001'; default: a local Ray)")  # fmt: skip
    add_engine_options(p)
    p.add_argument("--max-bytes", type=int, default=None, help="largest request body (default 64 MiB)")
    p.add_argument("--max-pixels", type=int, default=None,
                   help="largest image, H*W (default 16777216 = 4096 x 4096)")  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unet_fast.demo import bundled
    from unet_fast.distributed.ray_env import RayMissingError

    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    weights = args.weights or bundled.require(bundled.DEMO_WEIGHTS)
    check_engine_file(args.engine)
    try:
        from unet_fast.distributed import serve

        limits = {k: v for k, v in (("max_bytes", args.max_bytes), ("max_pixels", args.max_pixels)) if v}
        app = serve.build_app(weights, args.card, replicas=args.replicas, max_batch=args.max_batch,
                              batch_wait_ms=args.batch_wait_ms, threads=args.threads, backend=args.backend,
                              dtype=args.dtype, patch_size=args.patch_size, overlap=args.overlap,
                              batch_size=args.batch_size, mode=args.mode, engine=args.engine, **limits)  # fmt: skip
    except RayMissingError as e:
        print(f"unet-fast serve: error: {e}", file=sys.stderr)
        return 1

    def ready(url: str) -> None:
        print(f"serving {weights} on {url}: POST {url}/segment (image bytes), GET {url}/health, "
              f"GET {url}/stats; Ctrl-C stops", flush=True)  # fmt: skip

    try:
        serve.run_server(app, host=args.host, port=args.port, address=args.ray_address, on_ready=ready)
    except RuntimeError as e:  # Serve could not deploy (a replica failed to start, the port is taken)
        print(f"unet-fast serve: error: {e}", file=sys.stderr)
        return 1
    return 0
