"""A border painted pass by pass, with no seam where passes meet (numpy/cv2).

The canvas being painted is float RGB with a state per pixel: ``BLANK`` (not painted yet), ``KNOWN``
(the artist's pixels: never changed) or ``PAINTED`` (an earlier pass's result).  Each pass
(``core.contract.expand.Pass``) hands its window to a painter (the diffusion model, or anything with its
signature) along with what to repaint: its fresh pixels and the band of earlier results within
``band`` px of them.  The painter's output replaces the fresh pixels and is cross-faded into the
band with a weight falling smoothly from 1 next to the fresh pixels to 0 at the band's far edge, so
every border between two passes is a ramp, not a step.  Known pixels are never repainted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

from ..contract.geometry import Rect

BLANK, KNOWN, PAINTED = 0, 1, 2

# painter(index, pass, window RGB (a copy), repaint mask, fresh mask) -> RGB of the window's size
Painter = Callable[[int, object, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def repaint_weights(state: np.ndarray, fresh: Rect, band: int) -> tuple[np.ndarray, np.ndarray]:
    """(fresh mask, blend weight) over a window: 1 on the fresh pixels (``fresh`` in the window's
    coordinates); on earlier results within ``band`` px of them a smoothstep from nearly 1 next to
    them down to 0 just past ``band``; 0 elsewhere.  The pixels to repaint are those of weight > 0."""
    fresh_mask = np.zeros(state.shape, bool)
    fresh_mask[fresh.slices()] = True
    weight = fresh_mask.astype(np.float32)
    if band > 0:
        painted = state == PAINTED
        if painted.any():
            d = cv2.distanceTransform((~fresh_mask).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
            near = painted & (d <= band)
            t = 1.0 - d[near] / np.float32(band + 1)
            weight[near] = t * t * (3.0 - 2.0 * t)
    return fresh_mask, weight


def run_passes(rgb: np.ndarray, state: np.ndarray, origin: tuple[int, int], passes: Sequence,
               paint: Painter) -> None:
    """Paint ``passes`` into ``rgb`` (H×W×3 float32) and ``state`` (H×W uint8), in place; both cover
    the canvas area whose top-left pixel sits at ``origin``.  A window holding a blank pixel outside
    its fresh rectangle is a planning error (the model would see a hole as context): ValueError."""
    ox, oy = origin
    for i, p in enumerate(passes):
        win = p.window.translate(-ox, -oy)
        rows, cols = win.slices()
        view, st = rgb[rows, cols], state[rows, cols]
        if view.shape[:2] != (win.h, win.w):
            raise ValueError(f"pass {i}: window {p.window} lies outside the canvas area")
        fresh, weight = repaint_weights(st, p.fresh.translate(-p.window.x, -p.window.y), p.band)
        if ((st == BLANK) & ~fresh).any():
            raise ValueError(f"pass {i}: window {p.window} holds unpainted pixels outside its fresh ones")
        repaint = weight > 0
        out = np.asarray(paint(i, p, view.copy(), repaint, fresh), dtype=np.float32)
        if out.shape != view.shape:
            raise ValueError(f"painter returned {out.shape} for a {view.shape} window")
        w = weight[repaint][:, None]
        view[repaint] = out[repaint] * w + view[repaint] * (1.0 - w)
        st[fresh] = PAINTED
