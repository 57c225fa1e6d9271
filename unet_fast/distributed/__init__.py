"""Scale-out on Ray: batch segmentation of image collections (Ray Data) and an HTTP endpoint with dynamic
batching (Ray Serve). A layer above `unet_fast.inference`: it drives `Segmenter` as a black box, one per
Ray actor, so a mask written here is byte-identical to the one `unet-fast segment` writes.

Ray is an optional dependency (`pip install "unet_fast[ray]"`); importing this package works without it,
and every entry point that needs Ray raises `RayMissingError` naming the install command.

    from unet_fast.distributed import segment_dataset
    report = segment_dataset(["slides/"], "model.pt", "masks/", workers=8)
    print(report.failed, report.manifest)
"""

from __future__ import annotations

from unet_fast.distributed.batch import SegmentReport, segment_dataset
from unet_fast.distributed.ray_env import RayMissingError, require_ray

__all__ = ["RayMissingError", "SegmentReport", "require_ray", "segment_dataset"]
