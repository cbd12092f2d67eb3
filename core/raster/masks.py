"""Masks on numpy arrays: bounding boxes, distances, growing, feathering and rings.

Conventions: images are float32 H×W×C in [0, 1] (RGBA straight alpha, or RGB); masks and alphas are
float32 H×W in [0, 1]; selections come in as uint8 0–255.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..contract.geometry import Rect

cv2.setNumThreads(max(1, cv2.getNumberOfCPUs()))


def mask_bbox(mask: np.ndarray, origin: tuple[int, int] = (0, 0)) -> Rect | None:
    """Bounding box of the non-zero pixels of ``mask`` (in canvas coordinates), or None if empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask[rows[0]: rows[-1] + 1].any(axis=0))
    return Rect(origin[0] + int(cols[0]), origin[1] + int(rows[0]),
                int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1))


FAR = np.float32(1e6)      # "farther than anything asked about"
DISTANCE_TILE = 512        # px: tiles of the capped distance transform
DISTANCE_TILED_PIXELS = 1 << 21  # below this, one plain transform is as fast


def _distance_inside(binary: np.ndarray, cap: float | None = None) -> np.ndarray:
    """Euclidean distance of every True pixel to the nearest False pixel (0 on False pixels).

    With ``cap``, distances up to ``cap`` are exact and larger ones are only known to exceed it: large
    masks are then done in tiles with a margin of ``cap`` + 1 px (the nearest False pixel of any pixel
    within ``cap`` lies inside its tile's margin), tiles far from any edge are skipped, and tiles run
    in parallel threads (OpenCV releases the GIL)."""
    if binary.all():
        return np.full(binary.shape, FAR)
    if cap is None or binary.size < DISTANCE_TILED_PIXELS:
        return cv2.distanceTransform(binary.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    h, w = binary.shape
    out = np.empty((h, w), np.float32)

    def tile(y0: int, x0: int) -> None:
        y1, x1 = min(h, y0 + DISTANCE_TILE), min(w, x0 + DISTANCE_TILE)
        if not binary[y0:y1, x0:x1].any():
            out[y0:y1, x0:x1] = 0.0
            return
        d = tile_distance(binary, y0, y1, x0, x1, cap)
        out[y0:y1, x0:x1] = FAR if d is None else d

    from .pixels import run_parallel

    run_parallel([(y, x) for y in range(0, h, DISTANCE_TILE) for x in range(0, w, DISTANCE_TILE)], tile)
    return out


def tile_distance(mask: np.ndarray, y0: int, y1: int, x0: int, x1: int, cap: float) -> np.ndarray | None:
    """Distance of every pixel of the tile ``mask[y0:y1, x0:x1]`` to the nearest zero pixel of ``mask``
    (bool or uint8, non-zero = inside), exact up to ``cap``: the transform of the tile and a margin of
    ``cap`` + 1 px, where the nearest zero pixel of any pixel within ``cap`` lies.  None when that
    window has no zero pixel (every distance in the tile exceeds ``cap``)."""
    h, w = mask.shape
    margin = int(np.ceil(cap)) + 1
    ya, xa, yb, xb = max(0, y0 - margin), max(0, x0 - margin), min(h, y1 + margin), min(w, x1 + margin)
    window = mask[ya:yb, xa:xb]
    if window.all():
        return None
    src = np.ascontiguousarray(window).view(np.uint8)
    d = cv2.distanceTransform(src, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return d[y0 - ya: y1 - ya, x0 - xa: x1 - xa]


def distance_outside(binary: np.ndarray, cap: float | None = None) -> np.ndarray:
    """Distance of every False pixel to the nearest True pixel (see ``_distance_inside``)."""
    return _distance_inside(~binary, cap)


def grow_mask(binary: np.ndarray, px: int, outside: np.ndarray | None = None) -> np.ndarray:
    """Dilate a boolean mask by ``px`` pixels (round structuring element).  ``outside``: the mask's
    ``distance_outside`` if already known (exact up to at least ``px``)."""
    if px <= 0 or not binary.any():
        return binary.copy()
    if outside is None:
        outside = distance_outside(binary, px)
    return outside <= px


def feather_alpha(selection: np.ndarray, feather: int) -> np.ndarray:
    """Composite alpha from a soft selection (uint8 or float in [0, 1]).

    The edge is softened *inward* over ``feather`` pixels (smoothstep), and the result is multiplied
    by the selection's own softness, so the alpha is 0 exactly where the selection is 0.
    """
    sel = selection.astype(np.float32)
    if selection.dtype == np.uint8:
        sel *= 1.0 / 255.0
    if feather <= 0:
        return sel
    t = np.clip(_distance_inside(sel > 0, feather) / float(feather), 0.0, 1.0)
    ramp = t * t * (3.0 - 2.0 * t)
    return (sel * ramp).astype(np.float32)


def ring_mask(binary: np.ndarray, width: int, outside: np.ndarray | None = None) -> np.ndarray:
    """Pixels within ``width`` px outside a boolean mask (``outside``: as for ``grow_mask``)."""
    return grow_mask(binary, width, outside) & ~binary
