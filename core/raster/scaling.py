"""A region's pixels down to the model's resolution and back, with no float copy of the whole region.

The model works at a few hundred pixels a side; a region can be a whole 8192² layer.  So everything
that can happen at the model's resolution does (flattening, the repaint mask, the colour-match ring,
the colour match itself), and at the region's own resolution only three things remain:

- one area-averaging pass over the native pixels (``premultiplied_at``);
- the feathered alpha, computed in float only in the tiles that hold the selection's soft edge
  (``feathered_alpha``: elsewhere it is the selection itself, or zero);
- one interpolation of the model's output straight into the layer's own format, with that alpha
  (``patch_pixels``).

Invariant kept from the plain formulas: the patch's alpha is 0 wherever the selection is 0, and every
such pixel is all zero, so the layer under the patch shows through bit for bit.
"""

from __future__ import annotations

import math
import threading

import cv2
import numpy as np

from .masks import tile_distance
from .pixels import (
    _dtype,
    from_working_reference,
    result_array,
    run_bands,
    run_parallel,
    to_working,
    to_working_reference,
)

ALPHA_TILE = 256        # px: tiles of the feathered alpha (only tiles crossed by the soft edge do float work)
_INT_SCALE = {"BGRA_U8": 255.0, "RGBA_U8": 255.0, "BGRA_U16": 65535.0, "RGBA_U16": 65535.0}
_FLOATS = ("RGBA_F16", "RGBA_F32")
_U8 = ("BGRA_U8", "RGBA_U8")


# --- down: native region → premultiplied working RGBA at the model's size ---------------------------

def is_opaque(arr: np.ndarray, fmt: str) -> bool:
    """Whether every pixel of a native RGBA array is fully opaque."""
    if fmt in _U8 and arr.strides[-1] == 1 and arr.strides[-2] == 4:
        # Four bytes per pixel read as one little-endian word: alpha is its top byte.
        return bool(arr.view("<u4").min() >= 0xFF000000)
    if fmt in _INT_SCALE:
        return bool(arr[..., 3].min() == _INT_SCALE[fmt])
    return bool(np.all(arr[..., 3] >= 1.0))


def premultiplied_at(arr: np.ndarray, fmt: str, linear: bool, size: tuple[int, int]) -> tuple[np.ndarray, bool]:
    """(the native region ``arr`` as float32 premultiplied RGBA, sRGB-encoded, in [0, 1], at ``size``
    = (w, h); whether every pixel of ``arr`` is opaque).

    Shrinking averages areas in the layer's own encoding (light, for linear-light layers),
    premultiplied so that transparent pixels' colours do not bleed; enlarging (and equal size) converts
    first and then interpolates."""
    h, w = arr.shape[:2]
    if size[0] * size[1] >= w * h or fmt not in _INT_SCALE and fmt not in _FLOATS:
        rgba = to_working(arr, fmt, linear)
        opaque = bool(rgba[..., 3].min() >= 1.0)
        rgba[..., :3] *= rgba[..., 3:]
        if (w, h) == tuple(size):
            return rgba, opaque
        out = cv2.resize(rgba, tuple(size), interpolation=cv2.INTER_LANCZOS4)
        np.clip(out, 0.0, 1.0, out=out)
        np.minimum(out[..., :3], out[..., 3:], out=out[..., :3])   # premultiplied colour never exceeds alpha
        return out, opaque
    if fmt in _U8 and is_opaque(arr, fmt):
        small, opaque = cv2.resize(arr, tuple(size), interpolation=cv2.INTER_AREA).astype(np.float32), True
    else:
        small, opaque = _premultiplied_area(arr, fmt, tuple(size))
    return _normalised(small, fmt, linear), opaque


def _premultiplied_area(arr: np.ndarray, fmt: str, size: tuple[int, int]) -> tuple[np.ndarray, bool]:
    """(area-averaged float32 premultiplied RGBA in the native channel order and scale at ``size``,
    whether every pixel is opaque).  NaN counts as 0 and values are clipped first.

    Area averaging is separable: each band of rows is cleaned, premultiplied (unless it is opaque)
    and averaged across while it sits in the cache, and one last pass averages down the rows."""
    h, w = arr.shape[:2]
    top = _INT_SCALE.get(fmt, 1.0)
    across = np.empty((h, size[0], 4), np.float32)
    local = threading.local()
    transparent = []

    def band(y0: int, y1: int) -> None:
        o = getattr(local, "scratch", None)
        if o is None or o.shape[0] < y1 - y0:
            o = local.scratch = np.empty((y1 - y0, w, 4), np.float32)
        o = o[: y1 - y0]
        np.copyto(o, arr[y0:y1], casting="unsafe")
        if fmt in _FLOATS:
            cv2.patchNaNs(o, 0.0)
            cv2.threshold(o, top, top, cv2.THRESH_TRUNC, dst=o)
            cv2.threshold(o, 0.0, 0.0, cv2.THRESH_TOZERO, dst=o)
        a = cv2.extractChannel(o, 3)
        if cv2.minMaxLoc(a)[0] < top:
            transparent.append(y0)
            cv2.multiply(o, cv2.merge([a, a, a, np.full_like(a, top)]), dst=o, scale=1.0 / top)
        across[y0:y1] = cv2.resize(o, (size[0], y1 - y0), interpolation=cv2.INTER_AREA)

    run_bands(h, w, band)
    return cv2.resize(across, size, interpolation=cv2.INTER_AREA), not transparent


def _normalised(small: np.ndarray, fmt: str, linear: bool) -> np.ndarray:
    """Area-averaged premultiplied native values (float32) → premultiplied working RGBA in [0, 1]."""
    rgba = small[..., [2, 1, 0, 3]] if fmt.startswith("BGRA") else small.copy()
    rgba *= 1.0 / _INT_SCALE.get(fmt, 1.0)
    np.clip(rgba, 0.0, 1.0, out=rgba)
    if linear:
        a = rgba[..., 3:]
        straight = np.divide(rgba[..., :3], a, out=np.zeros_like(rgba[..., :3]), where=a > 0)
        rgba[..., :3] = to_working_reference(np.concatenate([straight, a], axis=-1), "RGBA_F32", True)[..., :3] * a
    return rgba


def flatten_premultiplied(rgba: np.ndarray, background: float = 0.5) -> np.ndarray:
    """RGB the model should see from premultiplied RGBA: transparency blended toward a neutral grey."""
    return (rgba[..., :3] + background * (1.0 - rgba[..., 3:])).astype(np.float32)


# --- masks at the model's resolution ---------------------------------------------------------------

def selection_at(binary: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A boolean selection at ``size`` = (w, h).  Along an axis that shrinks, a pixel is selected if
    any pixel it covers is (an area average of 255s, 65535s beyond 120 pixels per pixel, floats beyond
    30000, stays above 0 even for the quarter of a pixel that a fractional scale may put in one cell); along
    an axis that grows, each pixel takes the pixel it lands on."""
    h, w = binary.shape
    mid = (min(w, size[0]), min(h, size[1]))
    out = np.ascontiguousarray(binary)
    if mid != (w, h):
        flat = out.view(np.uint8)
        area = w * h / (mid[0] * mid[1])
        if area <= 120:
            full = cv2.multiply(flat, 255)
        elif area <= 30000:
            full = flat.astype(np.uint16)
            full *= np.uint16(65535)
        else:
            full = flat.astype(np.float32)
        out = cv2.resize(full, mid, interpolation=cv2.INTER_AREA) > 0
    if mid != tuple(size):
        out = cv2.resize(out.view(np.uint8), tuple(size), interpolation=cv2.INTER_NEAREST_EXACT) > 0
    return out.copy() if out is binary else out


def scaled_px(px: int, region: tuple[int, int], size: tuple[int, int]) -> int:
    """``px`` pixels of the region measured at ``size`` (rounded up: a margin never shrinks to 0)."""
    if px <= 0:
        return 0
    scale = (size[0] / region[0] + size[1] / region[1]) / 2.0
    return max(1, math.ceil(px * scale - 1e-9))


# --- up: the feathered alpha and the patch, at the region's resolution --------------------------------

def alpha_dtype(fmt: str):
    return np.float32 if fmt in _FLOATS else _dtype(fmt)


def feathered_alpha(selection: np.ndarray, feather: int, fmt: str, layer: np.ndarray | None = None) -> np.ndarray:
    """The patch's alpha in ``fmt``'s alpha type (uint8, uint16 or float32), from a uint8 selection.

    The same formula as ``imaging.feather_alpha`` (an inward smoothstep over ``feather`` px, times the
    selection's own softness), times ``layer`` (the native alpha channel, when the layer's
    transparency is kept).  Tiles with no selection are zero, and tiles farther than ``feather`` from
    the selection's edge are the selection itself, with no float work; tiles run in parallel."""
    h, w = selection.shape
    dtype = alpha_dtype(fmt)
    top = _INT_SCALE.get(fmt)
    out = np.empty((h, w), dtype)

    def tile(y0: int, x0: int) -> None:
        y1, x1 = min(h, y0 + ALPHA_TILE), min(w, x0 + ALPHA_TILE)
        s = selection[y0:y1, x0:x1]
        o = out[y0:y1, x0:x1]
        if not s.any():
            o[...] = 0
            return
        ramp = None
        d = tile_distance(selection, y0, y1, x0, x1, feather) if feather > 0 else None
        if d is not None:
            ramp = d * np.float32(1.0 / feather)
            np.minimum(ramp, 1.0, out=ramp)
            t = ramp.copy()
            ramp *= -2.0
            ramp += 3.0
            ramp *= t
            ramp *= t                                    # smoothstep: t² (3 - 2t)
        if ramp is None and layer is None and top == 255.0:
            o[...] = s                                   # exactly the selection
            return
        a = s.astype(np.float32) if ramp is None else ramp
        if ramp is not None:
            a *= s                                       # the selection's own softness, 0–255
        if layer is not None:
            a *= _alpha_float(layer[y0:y1, x0:x1], fmt)
        if top is None:
            a *= np.float32(1.0 / 255.0)
            o[...] = a
        elif top == 255.0:
            cv2.convertScaleAbs(a, dst=o)                # rounded to nearest, saturated
        else:
            a *= np.float32(top / 255.0)
            np.rint(a, out=a)
            np.copyto(o, a, casting="unsafe")

    run_parallel([(y, x) for y in range(0, h, ALPHA_TILE) for x in range(0, w, ALPHA_TILE)], tile)
    return out


def _alpha_float(a: np.ndarray, fmt: str) -> np.ndarray:
    if fmt in _INT_SCALE:
        return a.astype(np.float32) * (1.0 / _INT_SCALE[fmt])
    return np.clip(np.nan_to_num(a.astype(np.float32), nan=0.0), 0.0, 1.0)


def patch_pixels(rgb: np.ndarray, alpha: np.ndarray, fmt: str, linear: bool = False) -> np.ndarray:
    """Model output (float sRGB RGB, any size) → a native ``fmt`` array at ``alpha``'s size, with
    ``alpha`` (from ``feathered_alpha``) as its alpha and every pixel whose alpha is 0 all zero.

    The output is converted to the format at its own size and then scaled (area-averaged down,
    bicubic up) straight into the format: in light for linear-light layers, in the encoded values otherwise."""
    h, w = alpha.shape
    work_fmt = "RGBA_F32" if fmt == "RGBA_F16" else fmt
    small = from_working_reference(np.concatenate([rgb[..., :3], np.ones_like(rgb[..., :1])], axis=-1)
                                   .astype(np.float32), work_fmt, linear)
    big = np.empty((h, w, 4), np.float32) if fmt == "RGBA_F16" else result_array((h, w, 4), small.dtype)
    if small.shape[:2] == (h, w):
        big[...] = small
    else:
        shrinking = w * h < small.shape[0] * small.shape[1]
        cv2.resize(small, (w, h), dst=big, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
    alpha = np.ascontiguousarray(alpha, dtype=big.dtype)
    out = result_array(big.shape, np.float16) if fmt == "RGBA_F16" else big

    def band(y0: int, y1: int) -> None:
        b = big[y0:y1]
        if b.dtype == np.float32:                      # integer formats saturate by themselves
            np.clip(b, 0.0, 1.0, out=b)
        cv2.mixChannels([alpha[y0:y1]], [b], [0, 3])
        cv2.subtract(b, b, dst=b, mask=cv2.compare(alpha[y0:y1], 0, cv2.CMP_EQ))   # x - x = 0 where alpha is 0
        if out is not big:
            np.copyto(out[y0:y1], b, casting="unsafe")

    run_bands(h, w, band)
    return out
