"""Tiles for working on an image piece by piece in bounded memory.  Standard library only.

Each axis is cut into tiles of at most ``tile`` px that overlap their neighbours by at least
``overlap`` px and are all the same size; no pixel lies in more than two tiles of an axis, so a blend
only ever cross-fades two neighbours.  Tiles come in rows, top to bottom: once a row is done, the
output above the next row is final, so a consumer keeps only about one row of tiles in memory.

Blend weights (see ``skirt_and_ramp``) are 0 in a *skirt* at every edge a tile shares with a neighbour, then
rise smoothly to 1 across the overlap.  The skirt is where a tile's result is least trustworthy (the
model, or any filter, saw no pixels beyond the edge), and it gets no say in the blend at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..contract.geometry import Rect


@dataclass(frozen=True)
class TileGrid:
    width: int
    height: int
    overlap: int                       # nominal overlap (px); actual overlaps are at least this
    rows: tuple[tuple[Rect, ...], ...]  # tiles, row by row, left to right

    @property
    def tiles(self) -> list[Rect]:
        return [t for row in self.rows for t in row]

    def __len__(self) -> int:
        return sum(len(r) for r in self.rows)

    def final_rows(self) -> list[tuple[int, int]]:
        """For each row of tiles, the image rows [top, bottom) that no later row touches: they are
        final once that row (and every row before it) is done.  Together they cover the image once."""
        tops = [0] + [row[0].y for row in self.rows[1:]]
        return list(zip(tops, tops[1:] + [self.height]))


def default_overlap(tile: int) -> int:
    return tile // 4


def _spans_ok(starts: list[int], size: int, length: int, overlap: int) -> bool:
    if starts[0] != 0 or starts[-1] + size != length:
        return False
    for a, b in zip(starts, starts[1:]):
        if a + size - b < overlap:       # too little overlap
            return False
    return all(c >= a + size for a, c in zip(starts, starts[2:]))  # never three tiles on one pixel


def split_axis(length: int, tile: int, overlap: int, multiple: int = 1) -> list[tuple[int, int]]:
    """Cut [0, length) into (start, size) spans of one size ≤ ``tile``, overlapping by ≥ ``overlap``.

    Sizes are multiples of ``multiple`` when there is more than one span (a model may need that);
    a length that fits in one tile gives the single span (0, length).
    """
    if length < 1:
        raise ValueError(f"length must be at least 1, got {length}")
    tile -= tile % multiple
    if 3 * overlap + 2 > tile:
        raise ValueError(f"overlap {overlap} is too large for tiles of {tile} px (at most {(tile - 2) // 3})")
    if length <= tile:
        return [(0, length)]
    n = math.ceil((length - overlap) / (tile - overlap))
    while True:
        size = math.ceil((length + (n - 1) * overlap) / n)
        size = min(tile, -(-size // multiple) * multiple)
        starts = [(i * (length - size) + (n - 1) // 2) // (n - 1) for i in range(n)]
        if _spans_ok(starts, size, length, overlap):
            return [(s, size) for s in starts]
        n += 1
        if n > length:  # cannot happen with the overlap check above; never loop forever
            raise ValueError(f"cannot tile {length} px with tiles of {tile} and overlap {overlap}")


def plan_tiles(width: int, height: int, tile: int, overlap: int | None = None, multiple: int = 1) -> TileGrid:
    """Rows of overlapping tiles covering a width × height image."""
    overlap = default_overlap(tile) if overlap is None else overlap
    xs = split_axis(width, tile, overlap, multiple)
    ys = split_axis(height, tile, overlap, multiple)
    rows = tuple(tuple(Rect(x, y, w, h) for x, w in xs) for y, h in ys)
    return TileGrid(width, height, overlap, rows)


def skirt_and_ramp(overlap: int) -> tuple[float, float]:
    """(skirt, ramp) in px: weight 0 over the first quarter of the overlap, rising over the next half."""
    return overlap / 4.0, overlap / 2.0

