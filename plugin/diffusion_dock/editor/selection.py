"""Selection masks of the standalone editor: shapes (rectangle, ellipse, freehand lasso), a soft
brush, and how a new shape combines with the current selection.

A selection is a canvas-sized ``Format_Alpha8`` QImage: 0 = not selected, 255 = selected, values
between are a soft selection (what the engine's inpainting reads as a soft mask).  "No selection"
is ``None``.  Modifiers follow Krita: Shift adds, Alt subtracts, Shift+Alt intersects.
"""

from __future__ import annotations

import math
from enum import Enum

from ..runtime.qt import QPointF, QRectF, Qt, QtGui
from .pixels import new_mask


class Combine(Enum):
    REPLACE = "replace"
    ADD = "add"
    SUBTRACT = "subtract"
    INTERSECT = "intersect"


def combine_for(modifiers) -> Combine:
    shift = bool(modifiers & Qt.KeyboardModifier.ShiftModifier)
    alt = bool(modifiers & Qt.KeyboardModifier.AltModifier)
    if shift and alt:
        return Combine.INTERSECT
    if shift:
        return Combine.ADD
    if alt:
        return Combine.SUBTRACT
    return Combine.REPLACE


def _painter(mask: QtGui.QImage, antialias: bool) -> QtGui.QPainter:
    p = QtGui.QPainter(mask)
    p.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing, antialias)
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(QtGui.QColor(255, 255, 255, 255))
    return p


def rect_mask(size: tuple[int, int], rect: QRectF) -> QtGui.QImage:
    """Pixels whose area lies in ``rect`` (image coordinates, snapped to whole pixels)."""
    mask = new_mask(*size)
    r = rect.normalized()
    left, top = math.floor(r.left() + 0.5), math.floor(r.top() + 0.5)
    right, bottom = math.floor(r.right() + 0.5), math.floor(r.bottom() + 0.5)
    if right > left and bottom > top:
        p = _painter(mask, False)
        p.fillRect(left, top, right - left, bottom - top, QtGui.QColor(255, 255, 255, 255))
        p.end()
    return mask


def ellipse_mask(size: tuple[int, int], rect: QRectF) -> QtGui.QImage:
    """The ellipse inscribed in ``rect``, with an anti-aliased edge."""
    mask = new_mask(*size)
    r = rect.normalized()
    if r.width() > 0 and r.height() > 0:
        p = _painter(mask, True)
        p.drawEllipse(r)
        p.end()
    return mask


def lasso_mask(size: tuple[int, int], points: list[QPointF]) -> QtGui.QImage:
    """The closed freehand outline through ``points`` (odd-even fill), anti-aliased."""
    mask = new_mask(*size)
    if len(points) >= 3:
        path = QtGui.QPainterPath(points[0])
        for pt in points[1:]:
            path.lineTo(pt)
        path.closeSubpath()
        p = _painter(mask, True)
        p.drawPath(path)
        p.end()
    return mask


def combine(current: QtGui.QImage | None, shape: QtGui.QImage, how: Combine) -> QtGui.QImage:
    """The selection after applying ``shape`` to ``current`` (neither is modified)."""
    if how is Combine.REPLACE or (current is None and how is Combine.ADD):
        return shape.copy()
    if current is None:            # subtract from / intersect with nothing: nothing
        return new_mask(shape.width(), shape.height())
    out = current.copy()
    p = QtGui.QPainter(out)
    mode = {Combine.ADD: QtGui.QPainter.CompositionMode.CompositionMode_SourceOver,
            Combine.SUBTRACT: QtGui.QPainter.CompositionMode.CompositionMode_DestinationOut,
            Combine.INTERSECT: QtGui.QPainter.CompositionMode.CompositionMode_DestinationIn}[how]
    p.setCompositionMode(mode)
    p.drawImage(0, 0, shape)
    p.end()
    return out


def invert(current: QtGui.QImage | None, size: tuple[int, int]) -> QtGui.QImage:
    full = new_mask(*size)
    full.fill(QtGui.QColor(255, 255, 255, 255))
    return combine(full, current, Combine.SUBTRACT) if current is not None else full


class SoftBrush:
    """Paints a soft selection: round dabs whose strength falls from the centre to the edge.

    ``hardness`` (0–1) is the share of the radius at full strength; ``erase`` removes selection
    instead of adding it.  Dabs are spaced a quarter radius apart along the stroke.
    """

    def __init__(self, mask: QtGui.QImage, radius: float, hardness: float = 0.5, erase: bool = False):
        self.mask = mask
        self.radius = max(0.5, float(radius))
        self.hardness = min(1.0, max(0.0, float(hardness)))
        self.erase = erase
        self._last: QPointF | None = None
        self.dirty = QRectF()

    def _dab(self, c: QPointF) -> None:
        r = self.radius
        grad = QtGui.QRadialGradient(c, r)
        grad.setColorAt(0.0, QtGui.QColor(255, 255, 255, 255))
        grad.setColorAt(max(0.0, min(0.999, self.hardness)), QtGui.QColor(255, 255, 255, 255))
        grad.setColorAt(1.0, QtGui.QColor(255, 255, 255, 0))
        p = QtGui.QPainter(self.mask)
        p.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing, True)
        if self.erase:
            p.setCompositionMode(QtGui.QPainter.CompositionMode.CompositionMode_DestinationOut)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QtGui.QBrush(grad))
        box = QRectF(c.x() - r, c.y() - r, 2 * r, 2 * r)
        p.drawEllipse(box)
        p.end()
        self.dirty = self.dirty.united(box)

    def stroke_to(self, pt: QPointF) -> None:
        if self._last is None:
            self._dab(pt)
            self._last = QPointF(pt)
            return
        step = max(0.5, self.radius / 4)
        dx, dy = pt.x() - self._last.x(), pt.y() - self._last.y()
        dist = math.hypot(dx, dy)
        n = int(dist // step)
        for i in range(1, n + 1):
            t = i * step / dist
            self._dab(QPointF(self._last.x() + dx * t, self._last.y() + dy * t))
        if n:
            self._last = QPointF(self._last.x() + dx * n * step / dist, self._last.y() + dy * n * step / dist)
