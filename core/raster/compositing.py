"""Float images on numpy arrays: resizing, flattening over grey, colour matching and compositing.

Conventions: images are float32 H×W×C in [0, 1] (RGBA straight alpha, or RGB); masks and alphas are
float32 H×W in [0, 1].
"""

from __future__ import annotations

import cv2
import numpy as np

from ..contract.geometry import Rect


def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a float image to ``size`` = (w, h): area averaging down, Lanczos up, clipped to [0, 1]."""
    h, w = img.shape[:2]
    if (w, h) == tuple(size):
        return img.copy()
    shrinking = size[0] * size[1] < w * h
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LANCZOS4
    out = cv2.resize(np.ascontiguousarray(img, dtype=np.float32), tuple(size), interpolation=interp)
    if img.ndim == 3 and out.ndim == 2:
        out = out[..., None]
    return np.clip(out, 0.0, 1.0)


def flatten(rgba: np.ndarray, background: float = 0.5) -> np.ndarray:
    """RGB the model should see: transparent pixels are blended toward a neutral grey.
    (In bands of rows on every core: the same operations, so the same result, as one pass.)"""
    from .pixels import run_bands

    h, w = rgba.shape[:2]
    out = np.empty((h, w, 3), np.result_type(rgba.dtype, np.float32))

    def band(y0: int, y1: int) -> None:
        a = rgba[y0:y1, :, 3:4]
        np.multiply(rgba[y0:y1, :, :3], a, out=out[y0:y1])
        out[y0:y1] += background * (1.0 - a)

    run_bands(h, w, band)
    return out


def color_match(result: np.ndarray, reference: np.ndarray, ring: np.ndarray,
                max_gain: float = 2.0) -> np.ndarray:
    """Shift ``result`` (RGB) so that its per-channel mean and std in ``ring`` match ``reference``
    (an RGB image of the same size, or just its N×3 pixels in ``ring``)."""
    if ring.sum() < 16:
        return result
    r = result[ring]
    o = reference[ring] if reference.shape[:2] == ring.shape else reference
    mr, sr = r.mean(axis=0), r.std(axis=0)
    mo, so = o.mean(axis=0), o.std(axis=0)
    gain = np.clip(so / np.maximum(sr, 1e-3), 1.0 / max_gain, max_gain)
    from .pixels import run_bands

    h, w = result.shape[:2]
    out = np.empty(result.shape, np.float32)

    def band(y0: int, y1: int) -> None:
        o = out[y0:y1]
        o[...] = (result[y0:y1] - mr) * gain + mo
        np.clip(o, 0.0, 1.0, out=o)

    run_bands(h, w, band)
    return out


def over(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """Porter–Duff source-over of straight-alpha RGBA float images."""
    ta, ba = top[..., 3:4], bottom[..., 3:4]
    out_a = ta + ba * (1.0 - ta)
    rgb = top[..., :3] * ta + bottom[..., :3] * ba * (1.0 - ta)
    safe = np.where(out_a > 0, out_a, 1.0)
    return np.concatenate([rgb / safe, out_a], axis=-1).astype(np.float32)


def composite_native(original: np.ndarray, patch: np.ndarray, rect: Rect, fmt: str,
                     linear: bool = False) -> np.ndarray:
    """Stack a patch (native ``fmt`` array) over ``original`` (native array) at ``rect``, as an editor
    stacks a layer.  Returns a new array; where the patch's alpha is 0, ``original`` is copied bit for bit.
    """
    from .pixels import from_working, to_working

    out = original.copy()
    rows, cols = rect.slices()
    touched = patch[..., 3] != 0
    if not touched.any():
        return out
    base = to_working(original[rows, cols], fmt, linear)
    top = to_working(patch, fmt, linear)
    blended = from_working(over(top, base), fmt, linear)
    region = out[rows, cols]
    region[touched] = blended[touched]
    return out
