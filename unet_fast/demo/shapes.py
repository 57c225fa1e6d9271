"""A seeded, procedurally drawn 5-class segmentation data set ("cells and shapes"), for the bundled demo model.

Each image is grayscale: a dark background with a smooth illumination gradient, then randomly placed
ellipses ("cells"), rotated rectangles, triangles and thin lines, each with its own brightness, then blur
and noise. The label of a pixel is the class of the last shape painted over it (shapes occlude), so the
model must learn shape, not brightness. Everything is drawn with a `numpy.random.Generator`, so a seed
fixes the data set exactly on any machine (numpy's PCG64 stream is stable across platforms and versions).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASS_NAMES: tuple[str, ...] = ("background", "cell", "rectangle", "triangle", "line")
BACKGROUND, CELL, RECTANGLE, TRIANGLE, LINE = range(5)
NUM_CLASSES = len(CLASS_NAMES)


@dataclass(frozen=True)
class ShapeStyle:
    """Size ranges in pixels; brightness in [0, 1]. The defaults suit 96-512 px images."""

    shapes_per_10k_px: tuple[float, float] = (5.0, 9.0)  # object density, so big images get more shapes
    cell_radius: tuple[float, float] = (5.0, 14.0)
    rect_half: tuple[float, float] = (5.0, 16.0)
    tri_radius: tuple[float, float] = (8.0, 18.0)
    line_length: tuple[float, float] = (25.0, 70.0)
    line_width: tuple[float, float] = (1.5, 3.0)
    background: tuple[float, float] = (0.05, 0.35)
    foreground: tuple[float, float] = (0.45, 0.95)
    noise_sigma: tuple[float, float] = (0.02, 0.08)
    blur_sigma: tuple[float, float] = (0.4, 1.1)


def draw_sample(rng: np.random.Generator, height: int, width: int,
                style: ShapeStyle = ShapeStyle()) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """One (image, label) pair: image uint8 [H, W] (what a PNG holds), label uint8 [H, W] in 0..4."""
    if height < 8 or width < 8:
        raise ValueError(f"draw_sample needs an image of at least 8x8, got {height}x{width}")
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    label = np.zeros((height, width), np.uint8)

    # Background: a random level plus a linear illumination gradient (intensity variation).
    level = rng.uniform(*style.background)
    gy, gx = rng.uniform(-0.12, 0.12, size=2)
    image = level + gy * (yy / height - 0.5) + gx * (xx / width - 0.5)

    density = rng.uniform(*style.shapes_per_10k_px)
    count = max(1, round(density * height * width / 10_000))
    kinds = rng.choice([CELL, RECTANGLE, TRIANGLE, LINE], size=count, p=[0.35, 0.2, 0.25, 0.2])
    for kind in kinds:
        cy, cx = rng.uniform(-4, height + 4), rng.uniform(-4, width + 4)
        mask = _SHAPES[int(kind)](rng, style, yy - cy, xx - cx)
        brightness = rng.uniform(*style.foreground)
        if kind == CELL:  # cells get a little inner texture: a brighter nucleus-like centre
            image = np.where(mask, brightness + 0.08 * mask_falloff(yy - cy, xx - cx), image)
        else:
            image = np.where(mask, brightness, image)
        label[mask] = kind

    image = gaussian_blur(image.astype(np.float32), rng.uniform(*style.blur_sigma))
    image = image + rng.normal(0.0, rng.uniform(*style.noise_sigma), size=image.shape)
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), label


def draw_dataset(seed: int, count: int, height: int, width: int,
                 style: ShapeStyle = ShapeStyle()) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """`count` samples from one seed: images uint8 [count, H, W], labels uint8 [count, H, W]."""
    rng = np.random.default_rng(seed)
    images = np.empty((count, height, width), np.uint8)
    labels = np.empty((count, height, width), np.uint8)
    for i in range(count):
        images[i], labels[i] = draw_sample(rng, height, width, style)
    return images, labels


# -- shapes: each returns a boolean mask from coordinates relative to the shape's centre ----------------


def _rotate(rng: np.random.Generator, dy: np.ndarray, dx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = rng.uniform(0, np.pi)
    c, s = np.cos(a), np.sin(a)
    return c * dx + s * dy, -s * dx + c * dy


def _cell(rng: np.random.Generator, st: ShapeStyle, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    r = rng.uniform(*st.cell_radius)
    ry = r * rng.uniform(0.65, 1.0)  # ellipses, not just circles
    u, v = _rotate(rng, dy, dx)
    return (u / r) ** 2 + (v / ry) ** 2 <= 1.0


def _rectangle(rng: np.random.Generator, st: ShapeStyle, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    a, b = rng.uniform(*st.rect_half, size=2)
    u, v = _rotate(rng, dy, dx)
    return (np.abs(u) <= a) & (np.abs(v) <= b)


def _triangle(rng: np.random.Generator, st: ShapeStyle, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    # Three vertices at jittered angles around the centre: from near-equilateral to clearly scalene.
    r = rng.uniform(*st.tri_radius)
    angles = rng.uniform(0, 2 * np.pi) + np.array([0.0, 2.0944, 4.1888]) + rng.uniform(-0.35, 0.35, 3)
    px, py = r * np.cos(angles), r * np.sin(angles)
    inside = np.ones(dy.shape, bool)
    for i in range(3):
        j = (i + 1) % 3
        # The centre (0, 0) lies inside; keep the points on the same side of each edge as the centre.
        edge = (px[j] - px[i]) * (dy - py[i]) - (py[j] - py[i]) * (dx - px[i])
        centre = (px[j] - px[i]) * (0 - py[i]) - (py[j] - py[i]) * (0 - px[i])
        inside &= edge * np.sign(centre) >= 0
    return inside


def _line(rng: np.random.Generator, st: ShapeStyle, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    half = rng.uniform(*st.line_length) / 2
    width = rng.uniform(*st.line_width)
    u, v = _rotate(rng, dy, dx)
    along = np.clip(u, -half, half)
    return (u - along) ** 2 + v**2 <= (width / 2) ** 2


_SHAPES = {CELL: _cell, RECTANGLE: _rectangle, TRIANGLE: _triangle, LINE: _line}


def mask_falloff(dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """1 at the centre, falling to ~0 a few pixels out (a soft bright nucleus)."""
    return np.exp(-(dy**2 + dx**2) / 18.0)


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with edge replication (numpy only; no SciPy dependency)."""
    radius = max(1, int(3 * sigma + 0.5))
    t = np.arange(-radius, radius + 1, dtype=np.float32)
    k = np.exp(-(t**2) / (2 * sigma**2))
    k /= k.sum()
    out = image
    for axis in (0, 1):
        padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in range(2)], mode="edge")
        n = out.shape[axis]
        out = sum(k[i] * np.take(padded, np.arange(i, i + n), axis=axis) for i in range(2 * radius + 1))
    return out.astype(np.float32)
