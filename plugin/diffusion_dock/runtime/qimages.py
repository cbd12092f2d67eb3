"""QImages of the engine's buffers, for display only (thumbnails, the live preview).  Qt does the work:
no pixel arithmetic happens in Python.

The layouts map to QImage formats: BGRA_U8 → ARGB32 (little-endian), BGRA_U16 → RGBA64 with red and
blue swapped, RGBA_F16/F32 → the float formats of Qt 6.2+ (Krita 5's Qt 5 has none: those give
None and the dock uses the job's last preview instead), GRAY_U8 → Grayscale8, the engine's
previews (RGB U8) → RGB888.  Linear-light buffers are converted to sRGB for display.
"""

from __future__ import annotations

import sys

from .qt import Qt, QtCore, QtGui

QImage = QtGui.QImage
LITTLE_ENDIAN = sys.byteorder == "little"


def _format(name: str):
    return getattr(QImage.Format, name, None)


# layout → (QImage format name, bytes per pixel, swap red and blue)
_LAYOUTS = {
    "BGRA_U8": ("Format_ARGB32", 4, False),
    "RGBA_U8": ("Format_RGBA8888", 4, False),
    "BGRA_U16": ("Format_RGBA64", 8, True),
    "RGBA_U16": ("Format_RGBA64", 8, False),
    "RGBA_F16": ("Format_RGBA16FPx4", 8, False),
    "RGBA_F32": ("Format_RGBA32FPx4", 16, False),
    "GRAY_U8": ("Format_Grayscale8", 1, False),
    "GRAY_U16": ("Format_Grayscale16", 2, False),
    "RGB_U8": ("Format_RGB888", 3, False),
}


def displayable(layout: str) -> bool:
    spec = _LAYOUTS.get(layout)
    if spec is None or _format(spec[0]) is None:
        return False
    return LITTLE_ENDIAN or layout in ("RGBA_U8", "GRAY_U8", "RGB_U8")


def qimage(width: int, height: int, layout: str, data: bytes, linear: bool = False) -> QImage | None:
    """A QImage owning a copy of ``data`` (rows top to bottom, no padding), or None when this Qt
    cannot show the layout."""
    if not displayable(layout) or width <= 0 or height <= 0:
        return None
    name, bpp, swap = _LAYOUTS[layout]
    if len(data) < width * height * bpp:
        return None
    img = QImage(data, width, height, width * bpp, _format(name)).copy()   # copy: own the pixels
    if swap:
        img = img.rgbSwapped()
    if linear:
        img = to_srgb(img)
    return img


def to_srgb(img: QImage) -> QImage:
    """A linear-light image converted to sRGB for display (unchanged if Qt cannot)."""
    space = getattr(QtGui, "QColorSpace", None)
    if space is None:
        return img
    try:
        named = space.NamedColorSpace
        img.setColorSpace(space(named.SRgbLinear))
        img.convertToColorSpace(space(named.SRgb))
    except (AttributeError, TypeError):
        pass
    return img


def of_buffer(buf) -> QImage | None:
    """QImage of a ``jobs.ImageBuffer``."""
    return qimage(buf.width, buf.height, buf.format, buf.data, buf.linear)


def scaled(img: QImage, side: int) -> QImage:
    """Fit inside side × side, keeping the aspect ratio (smooth); never enlarges past 2×."""
    if img.isNull():
        return img
    limit = min(side, 2 * max(img.width(), img.height()))
    return img.scaled(limit, limit, Qt.AspectRatioMode.KeepAspectRatio,
                      Qt.TransformationMode.SmoothTransformation)


def thumbnail(buf, side: int = 160) -> QImage | None:
    img = of_buffer(buf)
    if img is None:
        return None
    small = scaled(img, side)
    return small.convertToFormat(QImage.Format.Format_ARGB32)


def png_bytes(img: QImage) -> bytes:
    ba = QtCore.QByteArray()
    buffer = QtCore.QBuffer(ba)
    buffer.open(QtCore.QIODevice.OpenModeFlag.WriteOnly)
    img.save(buffer, "PNG")
    buffer.close()
    return ba.data()


def placeholder(text: str, side: int = 96) -> QImage:
    """A neutral tile with a word on it, for results this Qt cannot draw."""
    img = QImage(side, side, QImage.Format.Format_ARGB32)
    img.fill(QtGui.QColor(90, 90, 90))
    p = QtGui.QPainter(img)
    p.setPen(QtGui.QColor(230, 230, 230))
    p.drawText(img.rect(), int(Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap), text)
    p.end()
    return img
