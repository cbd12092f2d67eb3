"""The canvas: shows the document (checkerboard, layers, selection tint), zooms and pans, and runs
the selection tools.

View: a widget point ``w`` shows image point ``(w - offset) / zoom``.  The wheel zooms about the
cursor (the image point under it stays put); the middle button, Space+drag or the Pan tool pans.
Tools: rectangle, ellipse, freehand lasso, soft brush.  Shift adds to the selection, Alt
subtracts, Shift+Alt intersects (for the brush, Alt erases).
"""

from __future__ import annotations

from enum import Enum

from ..runtime.qt import QPointF, QRectF, Qt, QtCore, QtGui, QtWidgets, Signal, event_pos
from .document import EditorDocument
from .pixels import new_mask
from .selection import Combine, SoftBrush, combine_for, ellipse_mask, lasso_mask, rect_mask

MIN_ZOOM, MAX_ZOOM = 1 / 32, 64.0
ZOOM_STEP = 1.25
SELECTION_TINT = QtGui.QColor(60, 140, 255)


class Tool(Enum):
    RECT = "rect"
    ELLIPSE = "ellipse"
    LASSO = "lasso"
    BRUSH = "brush"
    PAN = "pan"


class CanvasView(QtWidgets.QWidget):
    view_changed = Signal()            # zoom or offset
    cursor_moved = Signal(QPointF)     # image coordinates

    def __init__(self, document: EditorDocument | None = None, parent=None):
        super().__init__(parent)
        self.setObjectName("canvas")
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMinimumSize(200, 150)
        self.zoom = 1.0
        self.offset = QPointF(0, 0)
        self.tool = Tool.RECT
        self.brush_radius = 24.0
        self.brush_hardness = 0.5
        self.doc: EditorDocument | None = None
        self._composite: QtGui.QImage | None = None
        self._tint: QtGui.QImage | None = None
        self._checker = self._make_checker()
        self._drag = None            # (kind, start image point, Combine, data)
        self._pan_from: QPointF | None = None
        self._space = False
        self._hover: QPointF | None = None
        self._fitted = False
        if document is not None:
            self.set_document(document)

    # -- document
    def set_document(self, doc: EditorDocument) -> None:
        if self.doc is not None:
            for sig, slot in ((self.doc.pixels_changed, self._on_pixels), (self.doc.selection_changed,
                                                                            self._on_selection)):
                try:
                    sig.disconnect(slot)
                except (TypeError, RuntimeError):
                    pass
        self.doc = doc
        doc.pixels_changed.connect(self._on_pixels)
        doc.selection_changed.connect(self._on_selection)
        self._composite = None
        self._tint = None
        self._fitted = False
        self.fit()

    def _on_pixels(self, _rect=None) -> None:
        self._composite = None
        self.update()

    def _on_selection(self) -> None:
        self._tint = None
        self.update()

    # -- view transform
    def to_image(self, p: QPointF) -> QPointF:
        return QPointF((p.x() - self.offset.x()) / self.zoom, (p.y() - self.offset.y()) / self.zoom)

    def to_widget(self, p: QPointF) -> QPointF:
        return QPointF(p.x() * self.zoom + self.offset.x(), p.y() * self.zoom + self.offset.y())

    def set_view(self, zoom: float, offset: QPointF) -> None:
        self.zoom = min(MAX_ZOOM, max(MIN_ZOOM, zoom))
        self.offset = QPointF(offset)
        self.view_changed.emit()
        self.update()

    def zoom_at(self, widget_point: QPointF, factor: float) -> None:
        """Zoom by ``factor`` keeping the image point under ``widget_point`` where it is."""
        new = min(MAX_ZOOM, max(MIN_ZOOM, self.zoom * factor))
        anchor = self.to_image(widget_point)
        self.set_view(new, QPointF(widget_point.x() - anchor.x() * new, widget_point.y() - anchor.y() * new))

    def zoom_in(self) -> None:
        self.zoom_at(QPointF(self.width() / 2, self.height() / 2), ZOOM_STEP)

    def zoom_out(self) -> None:
        self.zoom_at(QPointF(self.width() / 2, self.height() / 2), 1 / ZOOM_STEP)

    def actual_size(self) -> None:
        self.zoom_at(QPointF(self.width() / 2, self.height() / 2), 1 / self.zoom)

    def pan_by(self, dx: float, dy: float) -> None:
        self.set_view(self.zoom, QPointF(self.offset.x() + dx, self.offset.y() + dy))

    def fit(self) -> None:
        """Whole image visible and centred (never enlarged beyond 100 %)."""
        if self.doc is None:
            return
        w, h = max(1, self.width() - 16), max(1, self.height() - 16)
        z = min(1.0, w / self.doc.width, h / self.doc.height)
        self.set_view(z, QPointF((self.width() - self.doc.width * z) / 2,
                                 (self.height() - self.doc.height * z) / 2))

    def resizeEvent(self, event):
        super().resizeEvent(event)
        if not self._fitted and self.doc is not None and self.isVisible():
            self._fitted = True
            self.fit()

    def showEvent(self, event):
        super().showEvent(event)
        if not self._fitted and self.doc is not None:
            self._fitted = True
            self.fit()

    # -- painting
    @staticmethod
    def _make_checker() -> QtGui.QPixmap:
        pm = QtGui.QPixmap(16, 16)
        pm.fill(QtGui.QColor(255, 255, 255))
        p = QtGui.QPainter(pm)
        p.fillRect(0, 0, 8, 8, QtGui.QColor(204, 204, 204))
        p.fillRect(8, 8, 8, 8, QtGui.QColor(204, 204, 204))
        p.end()
        return pm

    def composite(self) -> QtGui.QImage:
        if self._composite is None:
            self._composite = self.doc.composite()
        return self._composite

    def selection_tint(self) -> QtGui.QImage | None:
        if self.doc is None or self.doc.selection is None:
            return None
        if self._tint is None:
            tint = QtGui.QImage(self.doc.width, self.doc.height, QtGui.QImage.Format.Format_ARGB32_Premultiplied)
            tint.fill(SELECTION_TINT)
            p = QtGui.QPainter(tint)
            p.setCompositionMode(QtGui.QPainter.CompositionMode.CompositionMode_DestinationIn)
            p.drawImage(0, 0, self.doc.selection)
            p.end()
            self._tint = tint
        return self._tint

    def paintEvent(self, event):
        p = QtGui.QPainter(self)
        p.fillRect(self.rect(), self.palette().color(QtGui.QPalette.ColorRole.Mid))
        if self.doc is None:
            return
        target = QRectF(self.offset.x(), self.offset.y(), self.doc.width * self.zoom, self.doc.height * self.zoom)
        p.fillRect(target, QtGui.QBrush(self._checker))
        p.setRenderHint(QtGui.QPainter.RenderHint.SmoothPixmapTransform, self.zoom < 1)
        p.drawImage(target, self.composite())
        tint = self.selection_tint()
        if tint is not None:
            p.setOpacity(0.35)
            p.drawImage(target, tint)
            p.setOpacity(1.0)
        self._paint_tool_overlay(p)
        p.end()

    def _paint_tool_overlay(self, p: QtGui.QPainter) -> None:
        pen = QtGui.QPen(QtGui.QColor(0, 0, 0), 1, Qt.PenStyle.DashLine)
        p.setPen(pen)
        p.setBrush(Qt.BrushStyle.NoBrush)
        if self._drag is not None:
            kind, start, _, data = self._drag
            if kind in (Tool.RECT, Tool.ELLIPSE) and data is not None:
                r = QRectF(self.to_widget(start), self.to_widget(data)).normalized()
                (p.drawRect if kind is Tool.RECT else p.drawEllipse)(r)
            elif kind is Tool.LASSO and data:
                p.drawPolyline(QtGui.QPolygonF([self.to_widget(pt) for pt in data]))
        if self.tool is Tool.BRUSH and self._hover is not None:
            c = self.to_widget(self._hover)
            r = self.brush_radius * self.zoom
            p.setPen(QtGui.QPen(QtGui.QColor(255, 255, 255), 1))
            p.drawEllipse(c, r, r)
            p.setPen(pen)
            p.drawEllipse(c, r, r)

    # -- input
    def _panning(self, event) -> bool:
        return (event.button() == Qt.MouseButton.MiddleButton or self.tool is Tool.PAN
                or (self._space and event.button() == Qt.MouseButton.LeftButton))

    def mousePressEvent(self, event):
        pos = event_pos(event)
        if self.doc is None:
            return
        if self._panning(event):
            self._pan_from = pos
            self.setCursor(Qt.CursorShape.ClosedHandCursor)
            return
        if event.button() != Qt.MouseButton.LeftButton:
            return
        pt = self.to_image(pos)
        how = combine_for(event.modifiers())
        if self.tool is Tool.BRUSH:
            erase = bool(event.modifiers() & Qt.KeyboardModifier.AltModifier)
            base = self.doc.selection if self.doc.selection is not None else new_mask(*self.doc.size)
            work = base.copy()
            brush = SoftBrush(work, self.brush_radius, self.brush_hardness, erase)
            brush.stroke_to(pt)
            self._drag = (Tool.BRUSH, pt, how, brush)
            self._show_working(work)
        elif self.tool is Tool.LASSO:
            self._drag = (Tool.LASSO, pt, how, [pt])
        else:
            self._drag = (self.tool, pt, how, None)
        self.update()

    def mouseMoveEvent(self, event):
        pos = event_pos(event)
        if self.doc is None:
            return
        pt = self.to_image(pos)
        self._hover = pt
        self.cursor_moved.emit(pt)
        if self._pan_from is not None:
            d = pos - self._pan_from
            self._pan_from = pos
            self.pan_by(d.x(), d.y())
            return
        if self._drag is not None:
            kind, start, how, data = self._drag
            if kind is Tool.BRUSH:
                data.stroke_to(pt)
                self._show_working(data.mask)
            elif kind is Tool.LASSO:
                data.append(pt)
            else:
                self._drag = (kind, start, how, pt)
        self.update()

    def mouseReleaseEvent(self, event):
        if self._pan_from is not None:
            self._pan_from = None
            self.unsetCursor()
            return
        if self._drag is None or event.button() != Qt.MouseButton.LeftButton:
            return
        pt = self.to_image(event_pos(event))
        kind, start, how, data = self._drag
        self._drag = None
        size = self.doc.size
        if kind is Tool.BRUSH:
            data.stroke_to(pt)
            self._tint = None
            self.doc.set_selection(data.mask, "Brush selection")
        elif kind is Tool.LASSO:
            data.append(pt)
            self.doc.apply_selection(lasso_mask(size, data), how, "Lasso selection")
        elif kind is Tool.ELLIPSE:
            self.doc.apply_selection(ellipse_mask(size, QRectF(start, pt)), how, "Ellipse selection")
        elif kind is Tool.RECT:
            r = QRectF(start, pt).normalized()
            if r.width() < 0.5 and r.height() < 0.5 and how is Combine.REPLACE:
                self.doc.deselect()        # a click without a drag deselects, as in most editors
            else:
                self.doc.apply_selection(rect_mask(size, r), how, "Rectangle selection")
        self.update()

    def _show_working(self, mask: QtGui.QImage) -> None:
        """Show a selection being painted before it is committed (the tint only)."""
        saved = self.doc.selection
        self.doc.selection = mask
        self._tint = None
        self.selection_tint()
        self.doc.selection = saved

    def wheelEvent(self, event):
        delta = event.angleDelta().y()
        if delta == 0:
            return
        self.zoom_at(event_pos(event), ZOOM_STEP ** (delta / 120))

    def keyPressEvent(self, event):
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = True
            self.setCursor(Qt.CursorShape.OpenHandCursor)
            return
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event):
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = False
            self.unsetCursor()
            return
        super().keyReleaseEvent(event)

    def leaveEvent(self, event):
        self._hover = None
        self.update()
        super().leaveEvent(event)

    def sizeHint(self):
        return QtCore.QSize(900, 650)
