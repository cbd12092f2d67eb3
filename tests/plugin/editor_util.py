"""Helpers of the editor tests: masks and layers as numpy arrays, mouse drags in image coordinates."""

from __future__ import annotations

import numpy as np

from plugin.diffusion_dock.editor import pixels
from plugin.diffusion_dock.editor.document import EditorDocument
from plugin.diffusion_dock.editor.window import EditorWindow
from plugin.diffusion_dock.runtime.coreapi import geometry
from plugin.diffusion_dock.runtime.qt import QPoint, QPointF, Qt


def mask_array(mask) -> np.ndarray:
    if mask is None:
        return None
    data = pixels.read_rect(mask, geometry.Rect(0, 0, mask.width(), mask.height()))
    return np.frombuffer(data, np.uint8).reshape(mask.height(), mask.width())


def layer_array(image) -> np.ndarray:
    """A layer as (h, w, 4) uint8 in memory order (B, G, R, A)."""
    data = pixels.read_rect(image, geometry.Rect(0, 0, image.width(), image.height()))
    return np.frombuffer(data, np.uint8).reshape(image.height(), image.width(), 4)


def widget_point(canvas, x, y) -> QPoint:
    p = canvas.to_widget(QPointF(x, y))
    return QPoint(round(p.x()), round(p.y()))


def drag(qtbot, canvas, points, modifiers=Qt.KeyboardModifier.NoModifier, button=Qt.MouseButton.LeftButton):
    """Press at the first image point, move through the others, release at the last."""
    wp = [widget_point(canvas, x, y) for x, y in points]
    qtbot.mousePress(canvas, button, modifiers, wp[0])
    for p in wp[1:]:
        qtbot.mouseMove(canvas, p)
    qtbot.mouseRelease(canvas, button, modifiers, wp[-1])


def open_window(qtbot, session, width: int, height: int, seed: int, name: str):
    """(a shown editor window with the dock on ``session``, its one layer's pixels): a new document whose
    layer is opaque noise from ``seed`` (B, G, R, A order), with nothing to undo; closing it asks nothing."""
    doc = EditorDocument.new(width, height, name)
    src = np.random.default_rng(seed).integers(0, 256, (height, width, 4), dtype=np.uint8)
    src[..., 3] = 255
    pixels.write_rect(doc.layers[0].image, 0, 0, width, height, src.tobytes())
    doc.undo_stack.clear()
    win = EditorWindow(doc, session=session)
    win.confirm_close = False
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    return win, src
