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
