"""Pixel-format conversions between the editor's layouts and the engine's working arrays (numpy).

Working array: float32 H×W×4, RGBA, sRGB-encoded values in [0, 1], straight (not premultiplied)
alpha.  Linear-light inputs (Krita's default F16/F32 profile) are converted to sRGB on the way in
and back to linear on the way out, so models trained on sRGB images see sRGB.
"""

from __future__ import annotations

import os
import threading

import cv2
import numpy as np

from ..contract.jobs import PIXEL_FORMATS, ImageBuffer

BAND_PIXELS = 1 << 16        # pixels per band: a band's float RGBA (1 MiB) and its scratch stay in cache
PARALLEL_PIXELS = 1 << 18    # below this a conversion runs in the calling thread only
_RGBA_LAYOUTS = ("BGRA_U8", "BGRA_U16", "RGBA_U8", "RGBA_U16", "RGBA_F16", "RGBA_F32")
_pool = None
_pool_lock = threading.Lock()

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


_results = threading.local()


def result_array(shape: tuple, dtype) -> np.ndarray:
    """A new array for pixels that leave the engine (a patch): where the job's connection takes them
    from (shared memory, see ``core.link.bulk``, inside ``results_in``), else plain memory."""
    make = getattr(_results, "make", None)
    return np.empty(shape, dtype) if make is None else make(shape, dtype)


class results_in:
    """``with results_in(make):`` result arrays of this thread come from ``make(shape, dtype)``."""

    def __init__(self, make):
        self.make = make

    def __enter__(self):
        self.previous = getattr(_results, "make", None)
        _results.make = self.make

    def __exit__(self, *exc):
        _results.make = self.previous


def from_array(arr: np.ndarray, fmt: str, linear: bool = False) -> ImageBuffer:
    """An ImageBuffer over ``arr``'s memory (no copy when it is already contiguous in ``fmt``'s dtype:
    a 4096² F32 patch is 268 MB).  Its data is a read-only bytes-like view that keeps the array alive."""
    arr = np.ascontiguousarray(arr, dtype=_dtype(fmt))
    data = memoryview(arr).cast("B").toreadonly() if arr.size else b""
    return ImageBuffer(arr.shape[1], arr.shape[0], fmt, data, linear)


def srgb_to_linear(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(v: np.ndarray) -> np.ndarray:
    v = np.clip(np.asarray(v, dtype=np.float32), 0.0, None)
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * np.power(v, 1 / 2.4) - 0.055).astype(np.float32)


def to_working_reference(arr: np.ndarray, fmt: str, linear: bool = False) -> np.ndarray:
    """``to_working`` written as plain formulas over the whole array (the definition; small arrays and
    gray layouts use it directly, and the banded fast path is tested equal to it)."""
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


def from_working_reference(rgba: np.ndarray, fmt: str, linear: bool = False) -> np.ndarray:
    """``from_working`` written as plain formulas over the whole array (the definition)."""
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


# --- the fast path: the same formulas, band by band, on every core ---------------------------------
#
# The reference formulas walk the whole image once per operation (with a strided copy for every
# channel selection and both branches of every ``np.where``): about 3 s for a 4096² F32 layer there
# and back.  Here each band of rows goes through the same float32 operations in the same order while
# it sits in the cache, channel swaps go through OpenCV, and bands run in parallel threads (numpy and
# OpenCV release the GIL).  Same operations, same rounding: the results are identical (tested).

def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def run_bands(h: int, w: int, fn) -> None:
    """Call ``fn(y0, y1)`` over row bands covering [0, h); in parallel when the image is large."""
    rows = max(1, BAND_PIXELS // max(1, w))
    bands = [(y, min(h, y + rows)) for y in range(0, h, rows)]
    if h * w < PARALLEL_PIXELS:
        for b in bands:
            fn(*b)
        return
    run_parallel(bands, fn)



def run_parallel(items: list[tuple], fn) -> None:
    """Call ``fn(*item)`` for every item, spread over the worker threads (numpy/OpenCV work that
    releases the GIL); ``fn`` must not itself wait on this pool."""
    n = _workers()
    if n == 1 or len(items) <= 1:
        for b in items:
            fn(*b)
        return
    global _pool
    with _pool_lock:
        if _pool is None:
            from concurrent.futures import ThreadPoolExecutor

            _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="pixels")
    groups = [items[i::n] for i in range(min(n, len(items)))]

    def run(group):
        for b in group:
            fn(*b)

    for f in [_pool.submit(run, g) for g in groups]:
        f.result()


def _rgb_curve(band: np.ndarray, curve) -> None:
    """Apply ``curve`` (in place, on a contiguous h×w×3 float32 array) to the RGB of an RGBA band."""
    rgb = cv2.cvtColor(band, cv2.COLOR_RGBA2RGB)
    curve(rgb)
    cv2.mixChannels([rgb], [band], [0, 0, 1, 1, 2, 2])


def _linear_to_srgb_inplace(v: np.ndarray) -> None:
    """``linear_to_srgb`` on values already clipped to [0, 1], in place, operation for operation."""
    p = np.power(v, 1 / 2.4)
    p *= 1.055
    p -= 0.055
    np.multiply(v, 12.92, out=p, where=v <= 0.0031308)
    v[...] = p


def _srgb_to_linear_inplace(v: np.ndarray) -> None:
    """``srgb_to_linear`` in place, operation for operation."""
    q = v + 0.055
    q /= 1.055
    np.power(q, 2.4, out=q)
    np.divide(v, 12.92, out=q, where=v <= 0.04045)
    v[...] = q


def to_working(arr: np.ndarray, fmt: str, linear: bool = False) -> np.ndarray:
    """Native array (as from ``as_array``, possibly cropped) → float32 RGBA sRGB in [0, 1].
    Not-a-number becomes 0 and infinities are clipped (so HDR float layers never break the model)."""
    h, w = arr.shape[:2]
    if fmt not in _RGBA_LAYOUTS or arr.ndim != 3 or h * w < BAND_PIXELS // 4:
        return to_working_reference(arr, fmt, linear)
    out = np.empty((h, w, 4), np.float32)
    scale = {"BGRA_U8": 255.0, "RGBA_U8": 255.0, "BGRA_U16": 65535.0, "RGBA_U16": 65535.0}.get(fmt)

    def band(y0, y1):
        src, dst = arr[y0:y1], out[y0:y1]
        if scale is not None:
            if fmt.startswith("BGRA"):
                src = cv2.cvtColor(np.ascontiguousarray(src), cv2.COLOR_BGRA2RGBA)
            np.copyto(dst, src)
            dst *= 1.0 / scale
            np.clip(dst, 0.0, 1.0, out=dst)
        else:
            np.clip(src, 0.0, 1.0, out=dst)          # ±inf → 0 or 1
            np.copyto(dst, 0.0, where=np.isnan(dst))  # NaN → 0
        if linear:
            _rgb_curve(dst, _linear_to_srgb_inplace)

    run_bands(h, w, band)
    return out


def _native_band(s: np.ndarray, dst: np.ndarray, fmt: str, scratch: dict) -> None:
    """A clipped (and curved) float32 RGBA band → ``dst``, a band of the native array."""
    if fmt in ("RGBA_F32", "RGBA_F16"):
        np.copyto(dst, s, casting="unsafe")
        return
    s *= 255.0 if fmt.endswith("U8") else 65535.0
    np.rint(s, out=s)
    if fmt.startswith("RGBA"):
        np.copyto(dst, s, casting="unsafe")
        return
    ints = scratch.get("ints")
    if ints is None or ints.shape != s.shape:
        ints = scratch["ints"] = np.empty(s.shape, dst.dtype)
    np.copyto(ints, s, casting="unsafe")
    cv2.cvtColor(ints, cv2.COLOR_RGBA2BGRA, dst=dst)


def _to_native(h: int, w: int, fmt: str, linear: bool, fill_band, zero_transparent: bool) -> np.ndarray:
    out = np.empty((h, w, 4), _dtype(fmt))
    local = threading.local()

    def band(y0, y1):
        scratch = getattr(local, "scratch", None)
        if scratch is None:
            scratch = local.scratch = {}
        s = scratch.get("f")
        if s is None or s.shape[0] != y1 - y0:
            s = scratch["f"] = np.empty((y1 - y0, w, 4), np.float32)
        fill_band(y0, y1, s)
        np.clip(s, 0.0, 1.0, out=s)
        if linear:
            _rgb_curve(s, _srgb_to_linear_inplace)
        dst = out[y0:y1]
        _native_band(s, dst, fmt, scratch)
        if zero_transparent:
            np.copyto(dst, 0, where=(dst[..., 3:4] == 0))

    run_bands(h, w, band)
    return out


def from_working(rgba: np.ndarray, fmt: str, linear: bool = False) -> np.ndarray:
    """float32 RGBA sRGB [0, 1] → native array of ``fmt`` (rounded, clipped)."""
    h, w = rgba.shape[:2]
    if fmt not in _RGBA_LAYOUTS or rgba.ndim != 3 or h * w < BAND_PIXELS // 4:
        return from_working_reference(rgba, fmt, linear)

    def fill(y0, y1, s):
        np.copyto(s, rgba[y0:y1])

    return _to_native(h, w, fmt, linear, fill, False)


def pack(rgb: np.ndarray, alpha: np.ndarray, fmt: str, linear: bool = False) -> np.ndarray:
    """RGB (H×W×3) and alpha (H×W), float sRGB in [0, 1] → a native array of ``fmt`` in which every
    pixel whose alpha comes out 0 is all zero (what a patch is made of)."""
    h, w = rgb.shape[:2]
    if fmt not in _RGBA_LAYOUTS or h * w < BAND_PIXELS // 4:
        native = from_working_reference(np.concatenate([rgb, alpha[..., None]], axis=-1).astype(np.float32),
                                        fmt, linear)
        native[native[..., 3] == 0] = 0
        return native

    def fill(y0, y1, s):
        cv2.cvtColor(np.ascontiguousarray(rgb[y0:y1], dtype=np.float32), cv2.COLOR_RGB2RGBA, dst=s)
        cv2.mixChannels([np.ascontiguousarray(alpha[y0:y1], dtype=np.float32)], [s], [0, 3])

    return _to_native(h, w, fmt, linear, fill, True)


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
