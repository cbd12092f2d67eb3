"""Control pictures from photos and paintings with OpenCV alone (no weights): canny edges, soft edges,
line art and scribbles, as white strokes on black, which is what the SD 2.1 ControlNets were trained on.

What each one is, honestly:

- ``canny``: OpenCV's Canny detector (what the canny ControlNet was trained on), thresholds 100/200 on
  the 8-bit grey image, as the ControlNet annotator uses.
- ``softedge``: not HED (a neural network): the gradient magnitude of the lightly blurred image, the
  largest over R, G and B, scaled by its 99th percentile and softened.  Like HED it gives soft, graded
  contours; unlike HED it also marks texture, which the blur only partly removes.
- ``lineart``: not the line-art annotator (also a network): the dark strokes of the image, found as how
  much darker each pixel is than its blurred surroundings (difference of Gaussians), which is exact for
  ink drawings and sketches on paper and weaker on photos.
- ``scribble``: the soft edges thresholded and thickened into strokes a few pixels wide.

Depth (DPT-hybrid) and pose (OpenPose weights are not included) are not here: depth is a model
(``core.pipelines.preprocess``); a pose is drawn by the artist.
"""

from __future__ import annotations

import cv2
import numpy as np

OPENCV_TYPES = ("canny", "softedge", "lineart", "scribble")


def _grey_u8(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)), cv2.COLOR_RGB2GRAY)


def _rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(np.clip(grey, 0.0, 1.0).astype(np.float32)[..., None], 3, axis=-1)


def canny(rgb: np.ndarray, low: int = 100, high: int = 200) -> np.ndarray:
    return _rgb(cv2.Canny(_grey_u8(rgb), low, high).astype(np.float32) / 255.0)


def softedge(rgb: np.ndarray) -> np.ndarray:
    blurred = cv2.GaussianBlur(np.ascontiguousarray(rgb, dtype=np.float32), (0, 0), 1.5)
    gx = cv2.Sobel(blurred, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(blurred, cv2.CV_32F, 0, 1, ksize=3)
    mag = np.sqrt(gx * gx + gy * gy).max(axis=-1)
    scale = float(np.percentile(mag, 99)) if mag.size else 0.0
    if scale <= 1e-6:
        return _rgb(np.zeros(mag.shape, np.float32))
    return _rgb(np.sqrt(np.clip(mag / scale, 0.0, 1.0)))


def lineart(rgb: np.ndarray) -> np.ndarray:
    grey = _grey_u8(rgb).astype(np.float32) / 255.0
    around = cv2.GaussianBlur(grey, (0, 0), 3.0)
    darker = np.clip(around - grey - 0.5 / 255, 0.0, None)   # half an 8-bit level: no strokes from rounding
    return _rgb(np.clip(darker * 8.0, 0.0, 1.0))


def scribble(rgb: np.ndarray) -> np.ndarray:
    edges = softedge(rgb)[..., 0]
    strokes = (edges > 0.5).astype(np.uint8)
    side = max(3, round(min(rgb.shape[:2]) / 256) * 2 + 1)
    strokes = cv2.dilate(strokes, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side)))
    return _rgb(strokes.astype(np.float32))


PREPROCESSORS = {"canny": canny, "softedge": softedge, "lineart": lineart, "scribble": scribble}


def preprocess(kind: str, rgb: np.ndarray) -> np.ndarray:
    """The control picture of ``kind`` for a float RGB image (H×W×3 in [0, 1]): float RGB, same size,
    in [0, 1] (grey: R = G = B)."""
    return PREPROCESSORS[kind](rgb)
