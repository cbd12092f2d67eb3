"""Smooth fills of a hole from its boundary: the membrane (harmonic) fill and the edge-continuing fill.

Arrays are float32 H×W×C; ``unknown`` is a boolean H×W mask (True = to fill).  Both fills work coarse
to fine: a half-size problem is solved first (known pixels averaged, unknown where no known pixel
falls), its solution is scaled up as the start of the finer level, and a few relaxation sweeps over the
hole's bounding box finish each level.  That is what makes them fast on large holes.

- ``membrane``: every filled pixel is the mean of its four neighbours (Laplace's equation with the
  known pixels as boundary): gradients and flat areas come out right, edges blur.
- ``edge_fill``: the same relaxation with eight neighbours weighted by the image's structure tensor,
  measured on the known pixels and spread into the hole: across an edge that enters the hole the
  weights vanish, along it they stay, so edges continue straight through the hole instead of fanning
  out.  Where the known pixels have no dominant direction it is the membrane.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

MIN_SIDE = 8                     # the coarsest level's shorter side
MEMBRANE_SWEEPS = 40             # relaxation sweeps per level
EDGE_SWEEPS = (60, 30, 12)       # edge fill sweeps: coarsest level, middle levels, finest level
TENSOR_SIGMA = 2.0               # px: the window of the structure tensor
EDGE_STRENGTH = 20.0             # how strongly a coherent edge blocks diffusion across it
NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
_K4 = np.array([[0, 0.25, 0], [0.25, 0, 0.25], [0, 0.25, 0]], np.float32)

Tick = Callable[[], None]


def _noop() -> None:
    pass


def _as3(a: np.ndarray) -> np.ndarray:
    return a[..., None] if a.ndim == 2 else a


def bbox_slices(unknown: np.ndarray, margin: int = 1) -> tuple[slice, slice]:
    rows, cols = np.flatnonzero(unknown.any(1)), np.flatnonzero(unknown.any(0))
    h, w = unknown.shape
    return (slice(max(0, rows[0] - margin), min(h, rows[-1] + 1 + margin)),
            slice(max(0, cols[0] - margin), min(w, cols[-1] + 1 + margin)))


def downsample(values: np.ndarray, unknown: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Half size: each pixel the mean of the known pixels under it; unknown where there are none."""
    h, w = unknown.shape
    size = ((w + 1) // 2, (h + 1) // 2)
    known = (~unknown).astype(np.float32)
    k = cv2.resize(known, size, interpolation=cv2.INTER_AREA)
    v = _as3(cv2.resize(_as3(values) * known[..., None], size, interpolation=cv2.INTER_AREA))
    small_unknown = k < 1e-6
    v = v / np.maximum(k, 1e-6)[..., None]
    v[small_unknown] = 0
    return v.astype(np.float32), small_unknown


def upsample_into(values: np.ndarray, unknown: np.ndarray, coarse: np.ndarray) -> np.ndarray:
    h, w = unknown.shape
    up = _as3(cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR))
    out = _as3(values).copy()
    out[unknown] = up[unknown]
    return out


def _relax4(values: np.ndarray, unknown: np.ndarray, sweeps: int) -> np.ndarray:
    """Jacobi sweeps of the four-neighbour mean over the unknown pixels (replicated image border)."""
    ys, xs = bbox_slices(unknown)
    crop = np.ascontiguousarray(values[ys, xs])
    m = unknown[ys, xs].astype(np.uint8)
    for _ in range(sweeps):
        cv2.copyTo(cv2.filter2D(crop, -1, _K4, borderType=cv2.BORDER_REPLICATE), m, crop)
    out = values.copy()
    out[ys, xs] = _as3(crop)
    return out


def membrane(values: np.ndarray, unknown: np.ndarray, sweeps: int = MEMBRANE_SWEEPS) -> np.ndarray:
    """Harmonic fill of the unknown pixels of ``values`` (H×W×C float32).  Nothing known: zeros."""
    values = _as3(values).astype(np.float32)
    if not unknown.any():
        return values.copy()
    if unknown.all():
        return np.zeros_like(values)
    h, w = unknown.shape
    if min(h, w) >= 2 * MIN_SIDE:
        small, small_unknown = downsample(values, unknown)
        start = upsample_into(values, unknown, membrane(small, small_unknown, sweeps))
    else:
        start = values.copy()
        start[unknown] = values[~unknown].mean(axis=0)
    return _relax4(start, unknown, sweeps)


# ----------------------------------------------------------------------------- edge-continuing fill

def structure_tensor(rgb: np.ndarray, unknown: np.ndarray) -> np.ndarray:
    """H×W×3 (Jxx, Jxy, Jyy) summed over the channels, from gradients of known pixels only (a gradient
    touching an unknown pixel is left out), smoothed, and spread into the hole as a membrane."""
    known = (~unknown).astype(np.uint8)
    valid = cv2.erode(known, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE).astype(np.float32)
    gx = cv2.Sobel(rgb, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REPLICATE) / 8
    gy = cv2.Sobel(rgb, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REPLICATE) / 8
    j = np.stack([(gx * gx).sum(-1), (gx * gy).sum(-1), (gy * gy).sum(-1)], -1) * valid[..., None]
    num = cv2.GaussianBlur(j, (0, 0), TENSOR_SIGMA)
    den = cv2.GaussianBlur(valid, (0, 0), TENSOR_SIGMA)
    missing = den < 1e-3
    j = num / np.maximum(den, 1e-3)[..., None]
    return membrane(j, missing | unknown)


def edge_weights(tensor: np.ndarray, unknown: np.ndarray) -> np.ndarray:
    """9×H×W×3 relaxation weights: eight neighbours from the structure tensor (an edge blocks the
    neighbours across it; none outside the image) for unknown pixels, and the pixel itself (weight 1,
    nothing else) for known ones."""
    a, b, c = tensor[..., 0], tensor[..., 1], tensor[..., 2]
    disc = np.sqrt((a - c) ** 2 + 4 * b * b)
    l1, l2 = (a + c + disc) / 2, (a + c - disc) / 2
    coherence = (l1 - l2) / np.maximum(l1 + l2, 1e-12)
    vx, vy = b, l1 - a                       # the dominant eigenvector: across the edge
    flat = np.abs(vx) + np.abs(vy) < 1e-12
    vx, vy = np.where(flat, 1.0, vx), np.where(flat, 0.0, vy)
    norm = np.sqrt(vx * vx + vy * vy)
    vx, vy = vx / norm, vy / norm
    h, w = unknown.shape
    weights = np.zeros((len(NEIGHBOURS) + 1, h, w), np.float32)
    for k, (dy, dx) in enumerate(NEIGHBOURS):
        d2 = dx * dx + dy * dy
        weights[k] = np.exp(-EDGE_STRENGTH * coherence * (dx * vx + dy * vy) ** 2 / d2) / d2
        if dy:
            weights[k, 0 if dy < 0 else h - 1, :] = 0
        if dx:
            weights[k, :, 0 if dx < 0 else w - 1] = 0
    weights[:-1] /= weights[:-1].sum(0, keepdims=True)
    weights[:, ~unknown] = 0
    weights[-1, ~unknown] = 1
    return np.ascontiguousarray(np.repeat(weights[..., None], 3, -1))


def _relax_weighted(values: np.ndarray, unknown: np.ndarray, tensor: np.ndarray, sweeps: int,
                    tick: Tick) -> np.ndarray:
    ys, xs = bbox_slices(unknown)
    weights = edge_weights(tensor[ys, xs], unknown[ys, xs])
    h, w = weights.shape[1:3]
    pad = np.zeros((h + 2, w + 2, 3), np.float32)
    pad[1:-1, 1:-1] = values[ys, xs]
    offsets = (*NEIGHBOURS, (0, 0))
    for i in range(sweeps):
        acc = np.zeros((h, w, 3), np.float32)
        for k, (dy, dx) in enumerate(offsets):
            cv2.accumulateProduct(weights[k], pad[1 + dy: 1 + dy + h, 1 + dx: 1 + dx + w], acc)
        pad[1:-1, 1:-1] = acc
        if i % 8 == 7:
            tick()
    out = values.copy()
    out[ys, xs] = pad[1:-1, 1:-1]
    return out


def edge_fill(rgb: np.ndarray, unknown: np.ndarray, tick: Tick = _noop) -> np.ndarray:
    """Fill the unknown pixels of ``rgb`` continuing the edges that enter the hole (see the module)."""
    rgb = rgb.astype(np.float32)
    if not unknown.any():
        return rgb.copy()
    if unknown.all():
        return np.full_like(rgb, 0.5)
    start = membrane(rgb, unknown)
    tick()
    tensor = structure_tensor(start, unknown)
    tick()
    levels = [(rgb, unknown, tensor)]
    while min(levels[-1][1].shape) >= 2 * MIN_SIDE:
        v, u, t = levels[-1]
        sv, su = downsample(v, u)
        if su.all():
            break
        h, w = su.shape
        levels.append((sv, su, cv2.resize(t, (w, h), interpolation=cv2.INTER_AREA)))
    levels = levels[::-1]
    out = membrane(levels[0][0], levels[0][1]) if len(levels) > 1 else start
    for i, (v, u, t) in enumerate(levels):
        if i > 0:
            out = upsample_into(v, u, out)
        if not u.any():
            continue
        sweeps = EDGE_SWEEPS[0] if i == 0 else EDGE_SWEEPS[2] if i == len(levels) - 1 else EDGE_SWEEPS[1]
        out = _relax_weighted(out, u, t, sweeps, tick)
    return out
