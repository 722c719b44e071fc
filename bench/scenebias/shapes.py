"""Object classes of the scene-bias benchmark: filled silhouettes whose identity is their shape.

Each class is a shape drawn in a unit frame (``[-1, 1]^2``, y down) by one function; colour, size, pose
(rotation, anisotropic scale) and position are drawn at random per instance, so a classifier can only use
the silhouette. Rendering is 4x supersampled and box-filtered, which gives an alpha matte in [0, 1]; the
ground-truth mask is ``alpha >= 0.5``.

A new class is one function ``(draw, to_px) -> None`` plus one line in :data:`SHAPES`.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Sequence

import numpy as np
from PIL import Image, ImageDraw

SUPERSAMPLE = 4


def _polygon(points: Sequence[tuple[float, float]]):
    def draw(d: ImageDraw.ImageDraw, to_px) -> None:
        d.polygon([to_px(x, y) for x, y in points], fill=255)
    return draw


def _regular(n: int, phase: float = -math.pi / 2) -> list[tuple[float, float]]:
    return [(math.cos(phase + 2 * math.pi * i / n), math.sin(phase + 2 * math.pi * i / n)) for i in range(n)]


def _star(points: int = 5, inner: float = 0.45) -> list[tuple[float, float]]:
    out = []
    for i in range(2 * points):
        r = 1.0 if i % 2 == 0 else inner
        a = -math.pi / 2 + math.pi * i / points
        out.append((r * math.cos(a), r * math.sin(a)))
    return out


def _ellipse(d: ImageDraw.ImageDraw, to_px, cx: float, cy: float, r: float, fill: int) -> None:
    # An axis-aligned circle in the unit frame becomes an ellipse only under anisotropic scale; the
    # pose transform is applied to its polygon approximation so rotation and scale act on it too.
    pts = [to_px(cx + r * math.cos(t), cy + r * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 96, endpoint=False)]
    d.polygon(pts, fill=fill)


def _disc(d, to_px):
    _ellipse(d, to_px, 0.0, 0.0, 1.0, 255)


def _ring(d, to_px):
    _ellipse(d, to_px, 0.0, 0.0, 1.0, 255)
    _ellipse(d, to_px, 0.0, 0.0, 0.52, 0)


def _crescent(d, to_px):
    _ellipse(d, to_px, 0.0, 0.0, 1.0, 255)
    _ellipse(d, to_px, 0.5, -0.1, 0.85, 0)


_ARM = 0.36
SHAPES: Dict[str, Callable] = {
    "disc": _disc,
    "square": _polygon([(-0.75, -0.75), (0.75, -0.75), (0.75, 0.75), (-0.75, 0.75)]),
    "triangle": _polygon(_regular(3)),
    "cross": _polygon([(-_ARM, -1), (_ARM, -1), (_ARM, -_ARM), (1, -_ARM), (1, _ARM), (_ARM, _ARM), (_ARM, 1),
                       (-_ARM, 1), (-_ARM, _ARM), (-1, _ARM), (-1, -_ARM), (-_ARM, -_ARM)]),
    "star": _polygon(_star()),
    "crescent": _crescent,
    "ring": _ring,
    "arrow": _polygon([(-1, -0.3), (0.15, -0.3), (0.15, -0.8), (1, 0), (0.15, 0.8), (0.15, 0.3), (-1, 0.3)]),
}
MAX_CLASSES = len(SHAPES)


def render_alpha(shape: str, size: int, center: tuple[float, float], radius: float, angle: float,
                 aspect: float) -> np.ndarray:
    """The alpha matte of one object in a ``size x size`` image: float32 ``(size, size)`` in [0, 1].

    ``center`` (x, y) and ``radius`` (half the extent of the unit frame) are in pixels; ``angle`` in
    radians; ``aspect`` stretches x by ``aspect`` and y by ``1/aspect`` before the rotation.
    """
    s = SUPERSAMPLE
    canvas = Image.new("L", (size * s, size * s), 0)
    draw = ImageDraw.Draw(canvas)
    ca, sa = math.cos(angle), math.sin(angle)
    sx, sy = radius * aspect, radius / aspect

    def to_px(x: float, y: float) -> tuple[float, float]:
        x, y = x * sx, y * sy
        return ((center[0] + ca * x - sa * y) * s, (center[1] + sa * x + ca * y) * s)

    SHAPES[shape](draw, to_px)
    small = canvas.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0
