"""Rectangle geometry for regions of a canvas.  Standard library only.

The editor computes the region it needs to read with these same functions, so the engine and the
editor agree on which pixels a job touches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

CONTEXT_RATIO = 0.25   # context on each side, as a share of the selection's longer side
MIN_CONTEXT = 32       # px of context on each side at least
MAX_ASPECT = 3.0       # regions are widened toward this aspect ratio, for the model's sake
MIN_MODEL_SIDE = 64


@dataclass(frozen=True)
class Rect:
    x: int
    y: int
    w: int
    h: int

    @property
    def right(self) -> int:
        return self.x + self.w

    @property
    def bottom(self) -> int:
        return self.y + self.h

    @property
    def empty(self) -> bool:
        return self.w <= 0 or self.h <= 0

    @classmethod
    def from_edges(cls, left: int, top: int, right: int, bottom: int) -> Rect:
        return cls(left, top, max(0, right - left), max(0, bottom - top))

    def intersect(self, other: Rect) -> Rect:
        return Rect.from_edges(max(self.x, other.x), max(self.y, other.y),
                               min(self.right, other.right), min(self.bottom, other.bottom))

    def union(self, other: Rect) -> Rect:
        if self.empty:
            return other
        if other.empty:
            return self
        return Rect.from_edges(min(self.x, other.x), min(self.y, other.y),
                               max(self.right, other.right), max(self.bottom, other.bottom))

    def contains(self, other: Rect) -> bool:
        return (other.x >= self.x and other.y >= self.y
                and other.right <= self.right and other.bottom <= self.bottom)

    def pad(self, left: int, top: int | None = None, right: int | None = None,
            bottom: int | None = None) -> Rect:
        top = left if top is None else top
        right = left if right is None else right
        bottom = top if bottom is None else bottom
        return Rect.from_edges(self.x - left, self.y - top, self.right + right, self.bottom + bottom)

    def translate(self, dx: int, dy: int) -> Rect:
        return Rect(self.x + dx, self.y + dy, self.w, self.h)

    def slices(self, origin: tuple[int, int] = (0, 0)) -> tuple[slice, slice]:
        """Array slices (rows, cols) of this rect inside an array whose top-left sits at ``origin``."""
        ox, oy = origin
        return slice(self.y - oy, self.bottom - oy), slice(self.x - ox, self.right - ox)

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.w, self.h)


def _fit_axis(start: int, end: int, limit: int) -> tuple[int, int]:
    """Move [start, end) inside [0, limit) without shrinking it if it fits, else clamp it."""
    size = end - start
    if size >= limit:
        return 0, limit
    if start < 0:
        return 0, size
    if end > limit:
        return limit - size, limit
    return start, end


def fit_inside(rect: Rect, bounds: Rect) -> Rect:
    """``rect`` moved inside ``bounds`` by the smallest shift, keeping its size on each axis where it fits,
    else cut to ``bounds`` on that axis (the part of ``bounds`` nearest ``rect``, of its size at most)."""
    x0, x1 = _fit_axis(rect.x - bounds.x, rect.right - bounds.x, bounds.w)
    y0, y1 = _fit_axis(rect.y - bounds.y, rect.bottom - bounds.y, bounds.h)
    return Rect.from_edges(bounds.x + x0, bounds.y + y0, bounds.x + x1, bounds.y + y1)


def context_margin(bbox: Rect, grow: int = 0) -> int:
    """Pixels added on each side of a selection's bounding box: what the model repaints beyond the
    selection (``grow``) plus surrounding context so that it sees what it is filling."""
    return grow + max(MIN_CONTEXT, math.ceil(CONTEXT_RATIO * max(bbox.w, bbox.h)))


def plan_region(bbox: Rect | None, canvas: tuple[int, int], *, grow: int = 0, feather: int = 0,
                max_aspect: float = MAX_ASPECT) -> Rect:
    """The part of the canvas a selection-based job works on.

    ``bbox`` is the bounding box of the selection (None = no selection = whole canvas).  The box is
    grown by the repaint margin and padded with context, widened toward ``max_aspect``, then moved
    inside the canvas (keeping its size when it fits) and clamped.  ``feather`` works inside the
    selection and needs no extra room; it is accepted so that callers pass the full option set.
    """
    del feather
    cw, ch = canvas
    full = Rect(0, 0, cw, ch)
    if bbox is None or bbox.empty:
        return full
    bbox = bbox.intersect(full)
    if bbox.empty:
        return full
    m = context_margin(bbox, grow)
    left, top, right, bottom = bbox.x - m, bbox.y - m, bbox.right + m, bbox.bottom + m
    w, h = right - left, bottom - top
    if w > h * max_aspect:
        extra = math.ceil(w / max_aspect) - h
        top -= extra // 2
        bottom += extra - extra // 2
    elif h > w * max_aspect:
        extra = math.ceil(h / max_aspect) - w
        left -= extra // 2
        right += extra - extra // 2
    left, right = _fit_axis(left, right, cw)
    top, bottom = _fit_axis(top, bottom, ch)
    return Rect.from_edges(left, top, right, bottom)


def round_to(value: float, multiple: int, minimum: int) -> int:
    return max(minimum, int(round(value / multiple)) * multiple)


COARSE_MULTIPLE = 32


def model_size(w: int, h: int, native: int, *, multiple: int = 8, min_side: int = MIN_MODEL_SIDE
               ) -> tuple[int, int]:
    """Size at which a model with ``native`` resolution works on a w×h region.

    The area becomes about native², the aspect ratio is kept, both sides are multiples of
    ``multiple``: small regions are scaled up, large ones down.  With coarse multiples (≥ 32) the
    shorter side is rounded and the longer follows from the area: few sizes, each with a stretch
    of at most half a step on the shorter side, undone when the result goes back.
    """
    if w <= 0 or h <= 0:
        raise ValueError(f"empty region {w}x{h}")
    s = native / math.sqrt(w * h)
    if multiple < COARSE_MULTIPLE:
        return round_to(w * s, multiple, min_side), round_to(h * s, multiple, min_side)
    # Coarse steps (a compiled UNet: one compilation per shape): the shorter side is rounded and the
    # longer one follows from the area, so there are few sizes (9 from 1:4 to 4:1 at 512²).
    if w <= h:
        mw = round_to(w * s, multiple, min_side)
        return mw, round_to(native * native / mw, multiple, min_side)
    mh = round_to(h * s, multiple, min_side)
    return round_to(native * native / mh, multiple, min_side), mh
