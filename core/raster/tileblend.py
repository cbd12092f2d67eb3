"""Tiled scaling with feathered blending in output space, and row-band helpers (numpy).

``scale_tiled`` runs a tile function (e.g. one x4 diffusion upscale) over the tiles of a
``tiling.TileGrid`` and blends the results with separable weights that are 0 in the skirt of every
shared edge and cross-fade across the overlap.  It yields the output in finished row bands and keeps
only about one row of tiles of output in memory, so memory depends on the tile size and the image
width, not on the image area.  ``resize_rows`` and ``selection_alpha_rows`` compute the matching rows
of a whole-image resize or feathered selection exactly, from a slab of input rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import cv2
import numpy as np

from ..contract.geometry import Rect
from . import masks
from .tiling import TileGrid, skirt_and_ramp


def axis_weights(start: int, size: int, length: int, overlap: int, scale: int) -> np.ndarray:
    """Blend weights along one axis of a tile, at output resolution (``size * scale`` values)."""
    d = (np.arange(size * scale, dtype=np.float64) + 0.5) / scale  # input px from the tile's start
    skirt, ramp = skirt_and_ramp(overlap)
    w = np.ones_like(d)
    for shared, dist in ((start > 0, d), (start + size < length, size - d)):
        if shared:
            t = np.clip((dist - skirt) / ramp, 0.0, 1.0)
            w *= t * t * (3.0 - 2.0 * t)
    return w.astype(np.float32)


TileFn = Callable[[Rect, np.ndarray], np.ndarray]


def scale_tiled(image: np.ndarray, grid: TileGrid, fn: TileFn, scale: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(top, band)``: finished rows of ``fn`` applied tile by tile and blended, top to bottom.

    ``image`` is H×W×C; ``fn(rect, pixels)`` gets a tile's rectangle and pixels and returns them
    scaled: (h·scale)×(w·scale)×C' float32.  Bands are float32 rows [top, top + len(band)) of the
    (H·scale)×(W·scale)×C' result; together they cover it exactly once.
    """
    h, w = image.shape[:2]
    if (grid.width, grid.height) != (w, h):
        raise ValueError(f"tile grid is for {grid.width}x{grid.height}, image is {w}x{h}")
    s = scale
    acc = wsum = None
    acc_top = 0
    for row, (final_top, final_bottom) in zip(grid.rows, grid.final_rows()):
        top, bottom = row[0].y * s, row[0].bottom * s
        wy = axis_weights(row[0].y, row[0].h, h, grid.overlap, s)
        new_acc = new_wsum = None
        for rect in row:
            out = np.asarray(fn(rect, image[rect.y:rect.bottom, rect.x:rect.right]), dtype=np.float32)
            if out.shape[:2] != (rect.h * s, rect.w * s):
                raise ValueError(f"tile function returned {out.shape[1]}x{out.shape[0]} for a "
                                 f"{rect.w}x{rect.h} tile; expected {rect.w * s}x{rect.h * s}")
            if out.ndim == 2:
                out = out[..., None]
            if new_acc is None:
                new_acc = np.zeros((bottom - top, w * s, out.shape[2]), np.float32)
                new_wsum = np.zeros((bottom - top, w * s), np.float32)
                if acc is not None:  # rows the previous row of tiles shares with this one
                    keep = acc_top + acc.shape[0] - top
                    if keep > 0:
                        new_acc[:keep] = acc[top - acc_top:]
                        new_wsum[:keep] = wsum[top - acc_top:]
            wt = wy[:, None] * axis_weights(rect.x, rect.w, w, grid.overlap, s)[None, :]
            cols = slice(rect.x * s, rect.right * s)
            new_acc[:, cols] += out * wt[..., None]
            new_wsum[:, cols] += wt
        acc, wsum, acc_top = new_acc, new_wsum, top
        rows = slice(final_top * s - acc_top, final_bottom * s - acc_top)
        weight = wsum[rows]
        if not (weight > 0).all():
            raise RuntimeError("tile weights leave a pixel uncovered (tiling bug)")
        yield final_top * s, acc[rows] / weight[..., None]


def _input_rows(top: int, bottom: int, scale: int, height: int, margin: int) -> tuple[int, int]:
    return max(0, top // scale - margin), min(height, math.ceil(bottom / scale) + margin)


def resize_rows(img: np.ndarray, scale: int, top: int, bottom: int, interpolation=cv2.INTER_LANCZOS4,
                margin: int = 6) -> np.ndarray:
    """Rows [top, bottom) of ``img`` resized ``scale``× (float32, not clipped), computed from a slab
    of input rows: the same values as resizing the whole image, in memory of the band's size."""
    r0, r1 = _input_rows(top, bottom, scale, img.shape[0], margin)
    slab = np.ascontiguousarray(img[r0:r1], dtype=np.float32)
    out = cv2.resize(slab, (slab.shape[1] * scale, slab.shape[0] * scale), interpolation=interpolation)
    return out[top - r0 * scale: bottom - r0 * scale]


def selection_alpha_rows(selection: np.ndarray, scale: int, feather: int, top: int, bottom: int) -> np.ndarray:
    """Rows [top, bottom) of the alpha of a selection scaled ``scale``× (each pixel a scale×scale
    block, so "outside" keeps its meaning exactly) and feathered inward by ``feather`` output px."""
    margin = math.ceil(feather / scale) + 1
    r0, r1 = _input_rows(top, bottom, scale, selection.shape[0], margin)
    big = np.repeat(np.repeat(selection[r0:r1], scale, axis=0), scale, axis=1)
    return masks.feather_alpha(big, feather)[top - r0 * scale: bottom - r0 * scale]
