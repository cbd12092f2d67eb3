"""Pixel-format conversions between the editor's layouts and the engine's working arrays (numpy).

Working array: float32 H×W×4, RGBA, sRGB-encoded values in [0, 1], straight (not premultiplied)
alpha.  Linear-light inputs (Krita's default F16/F32 profile) are converted to sRGB on the way in
and back to linear on the way out, so models trained on sRGB images see sRGB.
"""

from __future__ import annotations

import numpy as np

from .jobs import PIXEL_FORMATS, ImageBuffer

_DTYPES = {1: np.uint8, 2: np.uint16, 4: np.float32}


def _dtype(fmt: str):
    if fmt == "RGBA_F16":
        return np.dtype("<f2")
    if fmt == "RGBA_F32":
        return np.dtype("<f4")
    return np.dtype(_DTYPES[PIXEL_FORMATS[fmt][1]]).newbyteorder("<")


def as_array(buf: ImageBuffer) -> np.ndarray:
    """The buffer as an H×W×C array of its own dtype and channel order (a view, no copy)."""
    c = PIXEL_FORMATS[buf.format][0]
    arr = np.frombuffer(buf.data, dtype=_dtype(buf.format), count=buf.width * buf.height * c)
    return arr.reshape(buf.height, buf.width, c)


def from_array(arr: np.ndarray, fmt: str, linear: bool = False) -> ImageBuffer:
    arr = np.ascontiguousarray(arr, dtype=_dtype(fmt))
    return ImageBuffer(arr.shape[1], arr.shape[0], fmt, arr.tobytes(), linear)


def srgb_to_linear(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(v: np.ndarray) -> np.ndarray:
    v = np.clip(np.asarray(v, dtype=np.float32), 0.0, None)
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * np.power(v, 1 / 2.4) - 0.055).astype(np.float32)


def to_working(arr: np.ndarray, fmt: str, linear: bool = False) -> np.ndarray:
    """Native array (as from ``as_array``, possibly cropped) → float32 RGBA sRGB in [0, 1]."""
    if fmt in ("BGRA_U8", "BGRA_U16"):
        out = arr[..., [2, 1, 0, 3]].astype(np.float32)
        out *= 1.0 / (255.0 if fmt == "BGRA_U8" else 65535.0)
    elif fmt in ("RGBA_U8", "RGBA_U16"):
        out = arr.astype(np.float32)
        out *= 1.0 / (255.0 if fmt == "RGBA_U8" else 65535.0)
    elif fmt in ("RGBA_F16", "RGBA_F32"):
        out = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    elif fmt in ("GRAY_U8", "GRAY_U16"):
        g = arr[..., 0].astype(np.float32) * (1.0 / (255.0 if fmt == "GRAY_U8" else 65535.0))
        out = np.stack([g, g, g, np.ones_like(g)], axis=-1)
    else:
        raise ValueError(f"unknown pixel format {fmt}")
    np.clip(out, 0.0, 1.0, out=out)  # before the curve: huge HDR values would overflow it
    if linear:
        out[..., :3] = linear_to_srgb(out[..., :3])
    return out


def from_working(rgba: np.ndarray, fmt: str, linear: bool = False) -> np.ndarray:
    """float32 RGBA sRGB [0, 1] → native array of ``fmt`` (rounded, clipped)."""
    rgba = np.clip(rgba, 0.0, 1.0).astype(np.float32, copy=True)
    if linear:
        rgba[..., :3] = srgb_to_linear(rgba[..., :3])
    if fmt == "BGRA_U8":
        return np.rint(rgba[..., [2, 1, 0, 3]] * 255.0).astype(np.uint8)
    if fmt == "BGRA_U16":
        return np.rint(rgba[..., [2, 1, 0, 3]] * 65535.0).astype(np.uint16)
    if fmt == "RGBA_U8":
        return np.rint(rgba * 255.0).astype(np.uint8)
    if fmt == "RGBA_U16":
        return np.rint(rgba * 65535.0).astype(np.uint16)
    if fmt == "RGBA_F16":
        return rgba.astype(np.float16)
    if fmt == "RGBA_F32":
        return rgba
    raise ValueError(f"cannot write pixel format {fmt}")


def mask_array(buf: ImageBuffer) -> np.ndarray:
    """A GRAY_U8 mask buffer as an H×W uint8 view."""
    return as_array(buf)[..., 0]


def depth_array(buf: ImageBuffer) -> np.ndarray:
    """A depth buffer as H×W float32 in [0, 1] (1 = near): GRAY_U8/U16, or a layer in an editor layout
    (its red channel, sRGB-encoded as the depth job wrote it; alpha is ignored)."""
    if buf.format in ("GRAY_U8", "GRAY_U16"):
        a = as_array(buf)[..., 0].astype(np.float32)
        return a / (255.0 if buf.format == "GRAY_U8" else 65535.0)
    rgba = as_array(buf)
    red = rgba[..., 2:3] if buf.format.startswith("BGRA") else rgba[..., 0:1]
    return np.ascontiguousarray(to_working(red.repeat(4, axis=-1), buf.format, buf.linear)[..., 0])


def convert_buffer(buf: ImageBuffer, fmt: str, linear: bool = False) -> ImageBuffer:
    """The same pixels in another layout (``fmt``, linear or sRGB-encoded); unchanged if already so."""
    if buf.format == fmt and buf.linear == linear:
        return buf
    return from_array(from_working(to_working(as_array(buf), buf.format, buf.linear), fmt, linear), fmt, linear)
