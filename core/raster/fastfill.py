"""Fast fill algorithms on arrays: fill a hole of an RGB image from its surroundings, no prompt.

Every function takes float32 RGB H×W×3 in [0, 1] and a boolean hole mask H×W (True = fill) and
returns a float32 RGB image of the same size whose pixels outside the hole are the input's.

- ``opencv``: OpenCV's Telea (fast marching) or Navier–Stokes inpainting, per channel in float32 so
  16-bit and float layers keep their precision.  Needs no weights.
- ``lama``: the big-lama generator (``core.lama.infer.fill``).
- ``mean``: the mean colour of the known pixels, the baseline of the evaluation.
"""

from __future__ import annotations

import cv2
import numpy as np

from . import diffusion, patchfill

OPENCV_METHODS = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}
OPENCV_RADIUS = 5  # px of known neighbourhood each filled pixel looks at
TELEA_SCALE = 65535.0


def keep_known(rgb: np.ndarray, filled: np.ndarray, hole: np.ndarray) -> np.ndarray:
    out = np.clip(filled, 0.0, 1.0).astype(np.float32)
    out[~hole] = rgb[~hole]
    return out


def fill_opencv(rgb: np.ndarray, hole: np.ndarray, method: str = "telea", radius: int = OPENCV_RADIUS,
                on_channel=None) -> np.ndarray:
    """``on_channel(i, n)`` is called after each of the n channels (progress and cancellation)."""
    if method not in OPENCV_METHODS:
        raise ValueError(f"OpenCV fill method must be one of {', '.join(OPENCV_METHODS)}, got {method!r}")
    if not hole.any():
        return rgb.astype(np.float32, copy=True)
    if hole.all():
        return fill_mean(rgb, hole)
    mask = hole.astype(np.uint8) * 255
    flag = OPENCV_METHODS[method]
    # OpenCV's Telea adds a normalised gradient term and +0.5 rounding meant for 8-bit levels, an error
    # of up to ~2 units at any scale: working in 0–65535 makes it negligible for every pixel format.
    scale = np.float32(TELEA_SCALE if method == "telea" else 1.0)
    chans = []
    for c in range(rgb.shape[2]):
        chans.append(cv2.inpaint(np.ascontiguousarray(rgb[..., c] * scale, dtype=np.float32), mask, radius, flag))
        if on_channel is not None:
            on_channel(c + 1, rgb.shape[2])
    return keep_known(rgb, np.stack(chans, axis=-1) / scale, hole)


def fill_mean(rgb: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """The hole painted in the mean colour of the known pixels (grey when nothing is known)."""
    known = ~hole
    colour = rgb[known].mean(axis=0) if known.any() else np.full(rgb.shape[2], 0.5, np.float32)
    filled = np.broadcast_to(colour.astype(np.float32), rgb.shape)
    return keep_known(rgb, filled, hole)


# ----------------------------------------------------------------------------- textured fill

TEXTURE_SIGMA = 1.5            # px: detail is what a Gaussian of this size removes
TEXTURE_WINDOW = 1.5           # px: the window its energy is averaged over
TEXTURE_MIN_WIDTH = 25         # px: detail in narrower bands is an edge, not a texture (morphological opening)
TEXTURE_LOW, TEXTURE_HIGH = 0.002, 0.004   # RMS detail (0–1 units) where the patches start and fully take over


def texture_weight(rgb: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """H×W in [0, 1]: how textured the known surroundings are, spread into the hole.  Detail is the
    image minus its blur (from known pixels only); its local RMS over areas at least
    ``TEXTURE_MIN_WIDTH`` wide counts, so an isolated edge or corner does not."""
    known = (~hole).astype(np.float32)
    kb = cv2.GaussianBlur(known, (0, 0), TEXTURE_SIGMA)
    low = cv2.GaussianBlur(rgb * known[..., None], (0, 0), TEXTURE_SIGMA) / np.maximum(kb, 1e-6)[..., None]
    k = int(4 * TEXTURE_SIGMA) | 1
    valid = cv2.erode(known, np.ones((k, k), np.uint8), borderValue=1)
    energy = ((rgb - low) ** 2).sum(-1) * valid
    vb = cv2.GaussianBlur(valid, (0, 0), TEXTURE_WINDOW)
    energy = cv2.GaussianBlur(energy, (0, 0), TEXTURE_WINDOW) / np.maximum(vb, 1e-6)
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (TEXTURE_MIN_WIDTH, TEXTURE_MIN_WIDTH))
    rms = np.sqrt(cv2.morphologyEx(energy.astype(np.float32), cv2.MORPH_OPEN, disk))
    measured = (valid > 0) & (vb > 0.5)
    if not measured.any():
        return np.zeros(hole.shape, np.float32)
    rms = diffusion.membrane(rms, ~measured)[..., 0]
    t = np.clip((rms - TEXTURE_LOW) / (TEXTURE_HIGH - TEXTURE_LOW), 0, 1)
    return (t * t * (3 - 2 * t)).astype(np.float32)


def fill_textured(rgb: np.ndarray, hole: np.ndarray, on_step=None, seed: int = 0) -> np.ndarray:
    """The edge-continuing smooth fill (``diffusion.edge_fill``), with patches copied from the
    surroundings (``patchfill.synthesize``) wherever those are textured (``texture_weight``): textures
    continue instead of smearing, flat areas and clean edges stay smooth.  ``on_step(i, n)`` is called
    as the work advances (progress and cancellation).  Deterministic for a given ``seed``."""
    rgb = rgb.astype(np.float32)
    if not hole.any():
        return rgb.copy()
    if hole.all():
        return fill_mean(rgb, hole)
    report = on_step or (lambda i, n: None)
    smooth = keep_known(rgb, diffusion.edge_fill(rgb, hole), hole)
    weight = texture_weight(rgb, hole)
    if not (weight[hole] > 0).any():
        report(1, 1)
        return smooth
    levels = patchfill.pyramid(rgb, hole, np.zeros_like(hole))
    total = 1 + patchfill.plan_ticks(levels)
    done = [1]
    report(1, total)

    def tick() -> None:
        done[0] = min(done[0] + 1, total)
        report(done[0], total)

    patches = patchfill.synthesize(rgb, hole, smooth, seed=seed, tick=tick, levels=levels)
    w = weight[..., None]
    return keep_known(rgb, smooth + w * (patches - smooth), hole)
