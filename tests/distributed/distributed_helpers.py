"""Test inputs shared by the tests of unet_fast.distributed."""

import numpy as np
from PIL import Image


def write_mixed_images(folder, rng) -> list[str]:
    """12 images of mixed sizes (smaller and larger than the demo model's 128 patch) and formats: 8-bit
    gray / RGB / RGBA PNG, 16-bit and float TIFF, JPEG, BMP, 2-D and 3-D .npy, and two files sharing a stem
    (a.png, a.tif: named a_png / a_tif). Returns the file names."""
    folder.mkdir(parents=True, exist_ok=True)
    u8 = lambda *shape: rng.integers(0, 256, shape, dtype=np.uint8)  # noqa: E731
    Image.fromarray(u8(96, 140)).save(folder / "gray.png")
    Image.fromarray(u8(130, 171, 3)).save(folder / "rgb.png")
    Image.fromarray(u8(64, 64, 4)).save(folder / "rgba.png")
    Image.fromarray(rng.integers(0, 65536, (150, 90), dtype=np.uint16)).save(folder / "deep.tif")
    Image.fromarray(rng.random((77, 201), dtype=np.float32)).save(folder / "float.tif")
    Image.fromarray(u8(120, 120, 3)).save(folder / "photo.jpg", quality=90)
    Image.fromarray(u8(45, 260)).save(folder / "wide.bmp")
    np.save(folder / "plane.npy", rng.random((210, 133), dtype=np.float32))
    np.save(folder / "stack.npy", u8(128, 128, 3))
    Image.fromarray(u8(33, 47)).save(folder / "a.png")
    Image.fromarray(u8(140, 66)).save(folder / "a.tif")
    Image.fromarray(u8(256, 300)).save(folder / "big.png")
    return sorted(p.name for p in folder.iterdir())


def crashing_predictor(marker_dir, crashes: dict[str, int]):
    """A SegmentPredictor whose process dies (os._exit: no cleanup, like an OOM kill or a lost node) on
    the input named `name` until `crashes[name]` processes have died on it. Each death first wins a marker
    file in `marker_dir` (O_EXCL: exactly one process per marker), so the crashes stop after the count.

    Made in a function so that Ray pickles the class by value: its actors need not import this test file.
    Install it for a run with monkeypatch.setattr(unet_fast.distributed.batch, "SegmentPredictor", ...)."""
    import os
    from pathlib import Path

    from unet_fast.distributed.worker import SegmentPredictor

    markers, times = str(marker_dir), dict(crashes)

    class CrashingPredictor(SegmentPredictor):
        def segment(self, path: str, name: str) -> dict:
            for i in range(times.get(name, 0)):
                try:
                    os.close(os.open(Path(markers) / f"crashed-{name}-{i}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    continue
                os._exit(17)
            return super().segment(path, name)

    return CrashingPredictor
