"""Irregular masks in the style of LaMa's training and evaluation masks, for evaluating fills.

Styles (sizes are LaMa's "random_{thin,medium,thick}_512" settings, scaled with the image):

- ``thin``: many short polyline strokes 5–25 px wide;
- ``medium``: fewer, longer strokes up to ~100 px wide;
- ``thick``: a few long strokes up to ~250 px wide, sometimes with boxes;
- ``box``: axis-aligned rectangles 30–300 px;
- ``mixed``: each shape drawn from one of the above at random.

The mask's coverage (share of masked pixels) always ends inside ``coverage`` = (low, high): shapes are
added one at a time, a shape that would overshoot ``high`` is dropped, and if the shapes of the style
cannot reach ``low`` within a bounded number of tries, small discs top it up.  The same seed gives the
same mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

STYLES = ("thin", "medium", "thick", "box", "mixed")


@dataclass(frozen=True)
class StrokeStyle:
    max_width: int      # brush width range: 5 .. 5 + max_width (px at 512)
    max_len: int        # segment length range: 10 .. 10 + max_len
    max_vertices: int   # segments per stroke: 1 .. max_vertices
    box_share: float = 0.0


# Widths, lengths and angles as in LaMa's configs/data_gen/random_*_512.yaml.
STYLE_PARAMS = {
    "thin": StrokeStyle(max_width=20, max_len=100, max_vertices=5),
    "medium": StrokeStyle(max_width=100, max_len=200, max_vertices=5),
    "thick": StrokeStyle(max_width=250, max_len=450, max_vertices=5, box_share=0.3),
}
BOX_MIN, BOX_MAX, BOX_MARGIN = 30, 300, 10
MAX_ANGLE = 4


def coverage(mask: np.ndarray) -> float:
    return float(np.count_nonzero(mask)) / mask.size


def _stroke(rng: np.random.Generator, h: int, w: int, style: StrokeStyle, scale: float, index: int) -> np.ndarray:
    layer = np.zeros((h, w), np.uint8)
    x, y = int(rng.integers(w)), int(rng.integers(h))
    for _ in range(1 + int(rng.integers(style.max_vertices))):
        angle = 0.01 + float(rng.integers(MAX_ANGLE))
        if index % 2 == 0:
            angle = 2 * np.pi - angle
        length = (10 + float(rng.integers(style.max_len))) * scale
        width = max(1, int(round((5 + float(rng.integers(style.max_width))) * scale)))
        ex = int(np.clip(x + length * np.sin(angle), 0, w - 1))
        ey = int(np.clip(y + length * np.cos(angle), 0, h - 1))
        cv2.line(layer, (x, y), (ex, ey), 1, width)
        x, y = ex, ey
    return layer.astype(bool)


def _box(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    layer = np.zeros((h, w), bool)
    margin = int(BOX_MARGIN * scale)
    lo = max(2, int(BOX_MIN * scale))
    hi_w, hi_h = min(int(BOX_MAX * scale), w - 2 * margin), min(int(BOX_MAX * scale), h - 2 * margin)
    bw = int(rng.integers(lo, max(lo + 1, hi_w)))
    bh = int(rng.integers(lo, max(lo + 1, hi_h)))
    x0 = int(rng.integers(margin, max(margin + 1, w - margin - bw + 1)))
    y0 = int(rng.integers(margin, max(margin + 1, h - margin - bh + 1)))
    layer[y0: y0 + bh, x0: x0 + bw] = True
    return layer


def _disc(rng: np.random.Generator, h: int, w: int, radius: int) -> np.ndarray:
    layer = np.zeros((h, w), np.uint8)
    cv2.circle(layer, (int(rng.integers(w)), int(rng.integers(h))), radius, 1, -1)
    return layer.astype(bool)


def random_mask(height: int, width: int, *, seed: int, style: str = "mixed",
                coverage_range: tuple[float, float] = (0.1, 0.4), max_tries: int = 200) -> np.ndarray:
    """A boolean mask (True = hole) of ``style`` whose coverage lies in ``coverage_range``."""
    if style not in STYLES:
        raise ValueError(f"mask style must be one of {', '.join(STYLES)}, got {style!r}")
    low, high = coverage_range
    if not (0.0 <= low < high <= 1.0):
        raise ValueError(f"coverage range must satisfy 0 <= low < high <= 1, got {coverage_range}")
    if height < 8 or width < 8:
        raise ValueError(f"mask must be at least 8x8 px, got {width}x{height}")
    if (high - low) * height * width < 32:
        raise ValueError(f"coverage range {coverage_range} is too narrow for a {width}x{height} mask")
    rng = np.random.default_rng(seed)
    scale = min(height, width) / 512.0
    total = height * width
    mask = np.zeros((height, width), bool)
    count = 0

    def shape(i: int) -> np.ndarray:
        kind = style
        if kind == "mixed":
            kind = ("thin", "medium", "thick", "box")[int(rng.integers(4))]
        if kind == "box" or (STYLE_PARAMS[kind].box_share and rng.random() < STYLE_PARAMS[kind].box_share):
            return _box(rng, height, width, scale)
        return _stroke(rng, height, width, STYLE_PARAMS[kind], scale, i)

    tries = 0
    while count < low * total and tries < max_tries:
        candidate = mask | shape(tries)
        n = int(np.count_nonzero(candidate))
        if n <= high * total:
            mask, count = candidate, n
        tries += 1
    # Top up with discs small enough never to overshoot the range.
    radius = max(1, int(np.sqrt(max(1.0, (high - low) * total / 4.0) / np.pi)))
    while count < low * total:
        candidate = mask | _disc(rng, height, width, radius)
        n = int(np.count_nonzero(candidate))
        if n <= high * total:
            mask, count = candidate, n
    return mask
