"""Expand (outpainting): the canvas grows by given sizes and the new border is painted.  Standard
library only.

The geometry the dock, the engine and the command line share:

- ``Growth``: how far each side grows (``Options.expand_left/top/right/bottom``, px), the new canvas
  and where the old canvas sits in it (shifted by the left and top growth);
- ``context_rect``: the part of the OLD canvas the model looks at beside each grown side (the dock
  reads exactly this, the engine crops the request's image to exactly this, so both agree);
- ``new_area``: the new border as rectangles of the NEW canvas: the left and right strips beside the
  old rows, then the top and bottom strips across the whole new width (corners included);
- ``plan_passes``: the passes that paint the new border.  Each pass paints a *fresh* rectangle (the
  fresh rectangles tile the new border exactly once) and the model sees a *window* around it: the
  fresh pixels, the context (old pixels and the results of earlier passes) and a band of earlier
  results it repaints and cross-fades into (``band`` px), so passes join without seams.  Larger
  expansions take several passes outward (rings) and along each side (segments).

Patches are in the NEW canvas's coordinates; the old pixels are never part of them (alpha 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .geometry import Rect

SIDES = ("left", "top", "right", "bottom")
FIELDS = tuple(f"expand_{s}" for s in SIDES)
MIN_CONTEXT = 256      # px of the old canvas the model may look at beside a grown side, at least
MAX_ASPECT = 3         # a pass's window is at most this elongated (the model's sake)
NOTHING = "expand needs at least one of expand_left, expand_top, expand_right, expand_bottom above 0 px"


@dataclass(frozen=True)
class Growth:
    """Pixels added on each side of the canvas."""

    left: int = 0
    top: int = 0
    right: int = 0
    bottom: int = 0

    @classmethod
    def of(cls, options) -> Growth:
        """From an ``Options`` (or anything with the ``expand_*`` attributes)."""
        return cls(*(int(getattr(options, f, 0) or 0) for f in FIELDS))

    @classmethod
    def from_dict(cls, values: dict) -> Growth:
        """From a provenance record's options (missing sides are 0); ValueError when a side is not a
        whole number ≥ 0."""
        sides = []
        for f in FIELDS:
            v = values.get(f, 0) or 0
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{f} must be a whole number ≥ 0, got {v!r}")
            sides.append(v)
        return cls(*sides)

    @property
    def empty(self) -> bool:
        return not (self.left or self.top or self.right or self.bottom)

    @property
    def offset(self) -> tuple[int, int]:
        """Where the old canvas's top-left pixel lands on the new canvas."""
        return self.left, self.top

    def as_tuple(self) -> tuple[int, int, int, int]:
        return self.left, self.top, self.right, self.bottom

    def canvas(self, size: tuple[int, int]) -> tuple[int, int]:
        """The new canvas size."""
        return size[0] + self.left + self.right, size[1] + self.top + self.bottom

    def original(self, size: tuple[int, int]) -> Rect:
        """The old canvas in the new canvas's coordinates."""
        return Rect(self.left, self.top, size[0], size[1])

    def describe(self) -> str:
        parts = [f"{s} {v} px" for s, v in zip(SIDES, self.as_tuple()) if v]
        return ", ".join(parts) if parts else "nothing"


def to_aspect(size: tuple[int, int], aspect: tuple[int, int]) -> Growth:
    """The smallest growth that brings ``size`` to the aspect ratio ``aspect`` (w, h), split evenly
    between the two sides that grow (the odd pixel goes right or down).  Growth() when it has it."""
    w, h = size
    aw, ah = aspect
    if aw <= 0 or ah <= 0:
        raise ValueError(f"an aspect ratio needs two whole numbers above 0, got {aw}:{ah}")
    if w * ah < h * aw:                     # too narrow: widen
        extra = -(-h * aw // ah) - w
        return Growth(extra // 2, 0, extra - extra // 2, 0)
    if w * ah > h * aw:                     # too wide: heighten
        extra = -(-w * ah // aw) - h
        return Growth(0, extra // 2, 0, extra - extra // 2)
    return Growth()


def context_depth(growth: int, extent: int) -> int:
    """How deep into the old canvas the context beside a side that grows by ``growth`` px reaches
    (``extent``: the old canvas's width or height across that side)."""
    return min(extent, max(growth, MIN_CONTEXT)) if growth > 0 else 0


def context_rect(size: tuple[int, int], growth: Growth) -> Rect:
    """The part of the OLD canvas the job reads: the bounding box of a strip beside each grown side,
    ``context_depth`` deep.  Empty when nothing grows."""
    w, h = size
    cl, cr = context_depth(growth.left, w), context_depth(growth.right, w)
    ct, cb = context_depth(growth.top, h), context_depth(growth.bottom, h)
    out = Rect(0, 0, 0, 0)
    for strip in (Rect(0, 0, cl, h), Rect(w - cr, 0, cr, h), Rect(0, 0, w, ct), Rect(0, h - cb, w, cb)):
        if not strip.empty:
            out = out.union(strip)
    return out


def new_area(size: tuple[int, int], growth: Growth) -> tuple[Rect, ...]:
    """The new border, as disjoint rectangles of the new canvas: left and right beside the old rows,
    top and bottom across the whole new width."""
    w, h = size
    nw, nh = growth.canvas(size)
    rects = (Rect(0, growth.top, growth.left, h), Rect(growth.left + w, growth.top, growth.right, h),
             Rect(0, 0, nw, growth.top), Rect(0, growth.top + h, nw, growth.bottom))
    return tuple(r for r in rects if not r.empty)


def patch_rect(size: tuple[int, int], growth: Growth) -> Rect:
    """Where a result's patch sits on the new canvas: the bounding box of the new border."""
    out = Rect(0, 0, 0, 0)
    for r in new_area(size, growth):
        out = out.union(r)
    return out


# --- passes -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pass:
    side: str
    ring: int          # 0 next to the old canvas, counting outward
    segment: int       # 0 first along the side
    fresh: Rect        # the new pixels this pass paints (new-canvas coordinates)
    window: Rect       # what the model sees (contains ``fresh``)
    band: int          # px of earlier passes' results next to ``fresh`` that it repaints and cross-fades


def pass_sizes(native: int) -> tuple[int, int]:
    """(longest window side, band) in canvas px for a model working at ``native`` px: windows reach
    1.5× the native side, so the model never works below about 2/3 of the canvas's resolution."""
    max_side = max(32, native * 3 // 2)
    return max_side, max(4, max_side // 16)


def _segments(start: int, end: int, first: int, later: int, back: int) -> list[tuple[int, int, int]]:
    """(fresh start, fresh end, window start) of segments covering [start, end): the first window
    ``first`` px long, the others ``back`` px of context behind ``later`` fresh px, all balanced."""
    length = end - start
    if length <= first:
        return [(start, end, start)]
    n = 1 + math.ceil((length - first) / later)
    size = math.ceil((length + (n - 1) * back) / n)        # window length, the same for every segment
    out, pos = [], start
    for i in range(n):
        fresh_end = min(end, pos + (size if i == 0 else size - back))
        out.append((pos, fresh_end, start if i == 0 else max(start, pos - back)))
        pos = fresh_end
    return [s for s in out if s[1] > s[0]]


class _Side:
    """One side's frame: depth ``s`` measured outward from the old canvas's edge (negative inward),
    ``a`` along the side."""

    def __init__(self, name: str, size: tuple[int, int], growth: Growth):
        w, h = size
        nw, _ = growth.canvas(size)
        self.name = name
        self.depth = getattr(growth, name)
        if name in ("left", "right"):
            self.along = (growth.top, growth.top + h)
            self.inward = w
        else:
            self.along = (0, nw)
            self.inward = h
        self.edge = {"left": growth.left, "right": growth.left + w, "top": growth.top, "bottom": growth.top + h}[name]

    def rect(self, s0: int, s1: int, a0: int, a1: int) -> Rect:
        """Depths [s0, s1) × along [a0, a1) as a rectangle of the new canvas."""
        e = self.edge
        if self.name == "left":
            return Rect.from_edges(e - s1, a0, e - s0, a1)
        if self.name == "right":
            return Rect.from_edges(e + s0, a0, e + s1, a1)
        if self.name == "top":
            return Rect.from_edges(a0, e - s1, a1, e - s0)
        return Rect.from_edges(a0, e + s0, a1, e + s1)

    def known_depth(self, known: Rect, original: Rect) -> int:
        """How deep the known old pixels reach inward from this side's edge along the whole old edge
        (0 when they do not cover it)."""
        e = self.edge
        if self.name in ("left", "right"):
            covers = known.y <= original.y and known.bottom >= original.bottom
            inside = known.x <= e < known.right if self.name == "left" else known.x < e <= known.right
        else:
            covers = known.x <= original.x and known.right >= original.right
            inside = known.y <= e < known.bottom if self.name == "top" else known.y < e <= known.bottom
        if not (covers and inside):
            return 0
        reach = {"left": known.right - e, "right": e - known.x, "top": known.bottom - e, "bottom": e - known.y}[self.name]
        return max(0, min(self.inward, reach))


def plan_passes(size: tuple[int, int], growth: Growth, known: Rect, max_side: int, band: int) -> tuple[Pass, ...]:
    """The passes that paint the new border, in order: left, right, top, bottom; per side ring by
    ring outward, and along it segment by segment.

    ``known``: the old pixels the job has, in new-canvas coordinates (the request's image); ``max_side``
    and ``band`` from ``pass_sizes``.  Every window lies inside the new canvas and holds only its fresh
    pixels, known pixels and earlier passes' results; no side of it exceeds ``max_side``."""
    half = max_side // 2
    original = growth.original(size)
    passes: list[Pass] = []
    for name in ("left", "right", "top", "bottom"):
        side = _Side(name, size, growth)
        if side.depth <= 0:
            continue
        a0, a1 = side.along
        deepest = min(max_side, MAX_ASPECT * (a1 - a0))   # a window is never more elongated than MAX_ASPECT
        context = side.known_depth(known, original)

        def ctx_at(done: int, context=context, deepest=deepest) -> int:
            return min(context + done, half, deepest // 2)      # inward: earlier rings, then old pixels

        done = 0
        for ring, fresh in enumerate(_ring_depths(side.depth, ctx_at, deepest)):
            ctx = ctx_at(done)
            longest = min(max_side, MAX_ASPECT * (ctx + fresh))
            back = min(max_side // 4, longest // 2)          # context behind a later segment, along the side
            for seg, (f0, f1, w0) in enumerate(_segments(a0, a1, longest, max(1, longest - back), back)):
                b = min(band, ctx // 2) if seg == 0 else min(band, ctx // 2 or band, (f0 - w0) // 2)
                passes.append(Pass(name, ring, seg, side.rect(done, done + fresh, f0, f1),
                                   side.rect(done - ctx, done + fresh, w0, f1), b))
            done += fresh
    return tuple(passes)


def _ring_depths(depth: int, ctx_at, deepest: int) -> list[int]:
    """The fresh depth of each ring: as few rings as fit (each at most ``deepest`` minus its context),
    as even as that count allows (a thin last ring would see mostly its own neighbours)."""
    def plan(even: bool) -> list[int]:
        out: list[int] = []
        done = 0
        while done < depth:
            most = max(1, deepest - ctx_at(done))
            left = depth - done
            out.append(min(left, most, -(-left // max(1, count - len(out))) if even else most))
            done += out[-1]
        return out

    count = len(plan(False))
    even = plan(True)
    return even if len(even) == count else plan(False)
