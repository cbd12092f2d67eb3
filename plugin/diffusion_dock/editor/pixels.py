"""Byte-level helpers on QImages: copy rows in and out, find the bounds of non-zero bytes.

No pixel arithmetic happens here: rows are sliced and copied at C speed, which is exactly what the
host interface needs (pixels pass through in the editor's own layout).  Editor layers are
``Format_ARGB32`` (non-premultiplied), which on little-endian machines is B,G,R,A in memory: the
``BGRA_U8`` layout.  Masks are ``Format_Alpha8``: one byte per pixel.
"""

from __future__ import annotations

import sys

from ..runtime.coreapi import geometry
from ..runtime.qt import QtGui, image_view, writable_image_view

Rect = geometry.Rect
LAYER_FORMAT = QtGui.QImage.Format.Format_ARGB32
MASK_FORMAT = QtGui.QImage.Format.Format_Alpha8
LITTLE_ENDIAN = sys.byteorder == "little"


def new_layer_image(width: int, height: int) -> QtGui.QImage:
    img = QtGui.QImage(width, height, LAYER_FORMAT)
    img.fill(0)
    return img


def new_mask(width: int, height: int) -> QtGui.QImage:
    img = QtGui.QImage(width, height, MASK_FORMAT)
    img.fill(0)
    return img


def bytes_per_pixel(image: QtGui.QImage) -> int:
    return image.depth() // 8


def read_rect(image: QtGui.QImage, rect: Rect) -> bytes:
    """The bytes of ``rect`` (rows top to bottom, no padding); zeros where it leaves the image."""
    bpp = bytes_per_pixel(image)
    out = bytearray(rect.w * rect.h * bpp)
    inside = rect.intersect(Rect(0, 0, image.width(), image.height()))
    if inside.empty:
        return bytes(out)
    data = image_view(image)
    bpl = image.bytesPerLine()
    row_len = inside.w * bpp
    if inside == rect and rect.x == 0 and row_len == bpl:          # whole rows: one copy
        return bytes(data[rect.y * bpl:rect.bottom * bpl])
    dx = (inside.x - rect.x) * bpp
    for y in range(inside.y, inside.bottom):
        src = y * bpl + inside.x * bpp
        dst = (y - rect.y) * rect.w * bpp + dx
        out[dst:dst + row_len] = data[src:src + row_len]
    return bytes(out)


def write_rect(image: QtGui.QImage, x: int, y: int, width: int, height: int, data: bytes) -> None:
    """Copy ``data`` (rows of ``width`` pixels, no padding, the image's own layout) to (x, y),
    replacing what is there; parts outside the image are dropped."""
    bpp = bytes_per_pixel(image)
    if len(data) != width * height * bpp:
        raise ValueError(f"{width}x{height} needs {width * height * bpp} bytes, got {len(data)}")
    target = Rect(x, y, width, height).intersect(Rect(0, 0, image.width(), image.height()))
    if target.empty:
        return
    view = writable_image_view(image)
    bpl = image.bytesPerLine()
    row_len = target.w * bpp
    sx = (target.x - x) * bpp
    for ty in range(target.y, target.bottom):
        src = (ty - y) * width * bpp + sx
        dst = ty * bpl + target.x * bpp
        view[dst:dst + row_len] = data[src:src + row_len]


def to_layer_format(image: QtGui.QImage) -> QtGui.QImage:
    """Any QImage as a non-premultiplied ARGB32 image (a copy when it needs converting)."""
    if image.format() == LAYER_FORMAT:
        return image
    return image.convertToFormat(LAYER_FORMAT)


def nonzero_bounds(image: QtGui.QImage, within: Rect | None = None, channel: int | None = None) -> Rect | None:
    """Bounds of the pixels whose byte (``channel`` of each pixel, or the only byte of a mask) is
    not zero, searched inside ``within``; None when there is none.  For ARGB32 layers pass the alpha
    byte (3 on little-endian) to find the layer's content."""
    bpp = bytes_per_pixel(image)
    full = Rect(0, 0, image.width(), image.height())
    area = full if within is None else within.intersect(full)
    if area.empty:
        return None
    data = image_view(image)
    bpl = image.bytesPerLine()
    top = bottom = None
    left, right = area.w, -1
    for y in range(area.y, area.bottom):
        start = y * bpl + area.x * bpp
        row = bytes(data[start:start + area.w * bpp])       # contiguous copy, then a C-speed stride
        if bpp > 1:
            row = row[channel::bpp]
        stripped = row.lstrip(b"\0")
        if not stripped:
            continue
        if top is None:
            top = y
        bottom = y
        left = min(left, len(row) - len(stripped))
        right = max(right, len(row.rstrip(b"\0")) - 1)
    if top is None:
        return None
    return Rect(area.x + left, top, right - left + 1, bottom - top + 1)


def alpha_channel() -> int:
    """Index of the alpha byte in an ARGB32 pixel in memory."""
    return 3 if LITTLE_ENDIAN else 0
