"""Zoom and pan of the standalone editor's canvas."""

from __future__ import annotations

import pytest

from plugin.diffusion_dock.editor.canvas import MAX_ZOOM, MIN_ZOOM
from plugin.diffusion_dock.runtime.qt import QPoint, QPointF, Qt, QtGui

from .editor_util import drag


def close(a: QPointF, b: QPointF, tol=1e-6) -> bool:
    return abs(a.x() - b.x()) < tol and abs(a.y() - b.y()) < tol


def test_zoom_keeps_the_point_under_the_cursor(canvas):
    cursor = QPointF(123, 77)
    under = canvas.to_image(cursor)
    canvas.zoom_at(cursor, 3.0)
    assert canvas.zoom == pytest.approx(6.0)
    assert close(canvas.to_image(cursor), under)
    canvas.zoom_at(cursor, 0.1)
    assert close(canvas.to_image(cursor), under)


def test_wheel_zooms_about_the_cursor(qtbot, canvas):
    cursor = QPointF(150, 100)
    under = canvas.to_image(cursor)
    event = QtGui.QWheelEvent(cursor, canvas.mapToGlobal(cursor), QPoint(0, 0), QPoint(0, 120),
                              Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier,
                              Qt.ScrollPhase.NoScrollPhase, False)
    canvas.wheelEvent(event)
    assert canvas.zoom == pytest.approx(2.5)
    assert close(canvas.to_image(cursor), under, 1e-4)


def test_zoom_is_clamped(canvas):
    canvas.zoom_at(QPointF(0, 0), 1e6)
    assert canvas.zoom == MAX_ZOOM
    canvas.zoom_at(QPointF(0, 0), 1e-9)
    assert canvas.zoom == MIN_ZOOM


def test_middle_button_and_space_drag_pan(qtbot, canvas):
    start = canvas.offset
    qtbot.mousePress(canvas, Qt.MouseButton.MiddleButton, pos=QPoint(100, 100))
    qtbot.mouseMove(canvas, QPoint(130, 90))
    qtbot.mouseRelease(canvas, Qt.MouseButton.MiddleButton, pos=QPoint(130, 90))
    assert close(canvas.offset, QPointF(start.x() + 30, start.y() - 10))
    assert canvas.zoom == 2.0 and canvas.doc.selection is None
    qtbot.keyPress(canvas, Qt.Key.Key_Space)
    qtbot.mousePress(canvas, Qt.MouseButton.LeftButton, pos=QPoint(50, 50))
    qtbot.mouseMove(canvas, QPoint(40, 70))
    qtbot.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=QPoint(40, 70))
    qtbot.keyRelease(canvas, Qt.Key.Key_Space)
    assert close(canvas.offset, QPointF(start.x() + 20, start.y() + 10))
    assert canvas.doc.selection is None                      # panning never selects


def test_tools_work_after_zoom_and_pan(qtbot, canvas):
    canvas.zoom_at(QPointF(37, 51), 1.7)
    canvas.pan_by(-13, 9)
    drag(qtbot, canvas, [(20, 30), (50, 60)])
    b = canvas.doc.selection_bounds()
    # Mouse positions are whole widget pixels: at zoom 3.4 that is within a pixel of the target.
    assert abs(b.x - 20) <= 1 and abs(b.y - 30) <= 1 and abs(b.right - 50) <= 1 and abs(b.bottom - 60) <= 1


def test_fit_centres_the_image_and_actual_size_is_100_percent(canvas):
    canvas.fit()
    assert canvas.zoom == 1.0                                   # 120x90 fits at 100 %, never enlarged
    centre = canvas.to_widget(QPointF(60, 45))
    assert abs(centre.x() - canvas.width() / 2) < 1 and abs(centre.y() - canvas.height() / 2) < 1
    canvas.zoom_in()
    canvas.zoom_in()
    assert canvas.zoom == pytest.approx(1.5625)
    canvas.actual_size()
    assert canvas.zoom == pytest.approx(1.0)
