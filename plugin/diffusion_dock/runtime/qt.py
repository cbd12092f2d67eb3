"""The one place that picks the Qt binding.  Everything else imports Qt from here.

Inside Krita the binding must be Krita's own: Krita 5 embeds Qt 5 (PyQt5), Krita 6 embeds Qt 6
(PyQt6).  Krita 5.1 has no ``pykrita.qt_major_version()``, and there ``import PyQt6`` can succeed
(a system PyQt6) and load a second Qt that aborts the editor as soon as a widget is made.  So
inside Krita we never probe: we ask Krita, and assume 5 when it cannot tell.  Outside Krita
(the standalone editor, tests) we prefer PyQt6 and fall back to PyQt5; ``DD_QT_API=pyqt5|pyqt6``
forces one there.

The code base is written Qt6-style (scoped enums, ``exec()``), which PyQt5 5.15 also accepts;
the few classes that moved between modules in Qt 6 are exported from here.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

BINDINGS = ("PyQt6", "PyQt5")
ENV_OVERRIDE = "DD_QT_API"


def krita_qt_major() -> tuple[bool, int | None]:
    """(running inside Krita, the Qt major version Krita reports or None when it cannot tell)."""
    try:
        import pykrita  # a built-in module of Krita's embedded Python, absent everywhere else
    except ImportError:
        return False, None
    ask = getattr(pykrita, "qt_major_version", None)   # Krita 5.3 and 6.x
    if callable(ask):
        try:
            return True, int(ask())
        except Exception:
            return True, None
    return True, None


def installed(name: str) -> bool:
    """Whether a binding can be imported, found without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def choose_binding(inside_krita: bool, krita_qt_major: int | None,
                   available: Callable[[str], bool], override: str | None = None) -> str:
    """Name of the binding to import ("PyQt6" or "PyQt5").

    ``available`` is consulted only outside Krita; inside Krita the answer depends on Krita's Qt
    alone (6 → PyQt6, anything else or unknown → PyQt5) and the override is ignored, because a
    second Qt in Krita's process crashes it.
    """
    if inside_krita:
        return "PyQt6" if krita_qt_major == 6 else "PyQt5"
    if override:
        wanted = {"pyqt6": "PyQt6", "pyqt5": "PyQt5"}.get(override.strip().lower())
        if wanted is None:
            raise ImportError(f"{ENV_OVERRIDE}={override!r}: use pyqt6 or pyqt5")
        if not available(wanted):
            raise ImportError(f"{ENV_OVERRIDE}={override!r} but {wanted} is not installed")
        return wanted
    for name in BINDINGS:
        if available(name):
            return name
    raise ImportError("Diffusion Dock needs PyQt6 or PyQt5 (pip install PyQt6)")


INSIDE_KRITA, KRITA_QT_MAJOR = krita_qt_major()
BINDING = choose_binding(INSIDE_KRITA, KRITA_QT_MAJOR, installed, os.environ.get(ENV_OVERRIDE))

if TYPE_CHECKING:   # type checkers read the Qt 6 API, which the code is written to
    from PyQt6 import QtCore, QtGui, QtWidgets
    from PyQt6.QtCore import QByteArray, QEvent, QObject, QPoint, QPointF, QRect, QRectF, QSize, Qt, QTimer
    from PyQt6.QtCore import pyqtSignal as Signal
    from PyQt6.QtCore import pyqtSlot as Slot
    from PyQt6.QtGui import QAction, QActionGroup, QShortcut, QUndoCommand, QUndoStack
else:
    QtCore = importlib.import_module(BINDING + ".QtCore")
    QtGui = importlib.import_module(BINDING + ".QtGui")
    QtWidgets = importlib.import_module(BINDING + ".QtWidgets")

    Qt = QtCore.Qt
    QObject = QtCore.QObject
    QEvent = QtCore.QEvent
    QTimer = QtCore.QTimer
    QPoint, QPointF, QRect, QRectF, QSize = QtCore.QPoint, QtCore.QPointF, QtCore.QRect, QtCore.QRectF, QtCore.QSize
    QByteArray = QtCore.QByteArray
    Signal = QtCore.pyqtSignal
    Slot = QtCore.pyqtSlot

    # Moved from QtWidgets to QtGui in Qt 6.
    _moved = QtGui if int(QtCore.QT_VERSION_STR.split(".")[0]) >= 6 else QtWidgets
    QAction = _moved.QAction
    QActionGroup = _moved.QActionGroup
    QShortcut = _moved.QShortcut
    QUndoStack = _moved.QUndoStack
    QUndoCommand = _moved.QUndoCommand

QT_MAJOR = int(QtCore.QT_VERSION_STR.split(".")[0])
QT_VERSION = QtCore.QT_VERSION_STR


def to_bytes(data) -> bytes:
    """A QByteArray (or anything buffer-like) as Python bytes."""
    return bytes(data)


def event_pos(event) -> QtCore.QPointF:
    """Position of a mouse or wheel event in widget coordinates, as a QPointF (Qt 5 and 6)."""
    if hasattr(event, "position"):
        return QtCore.QPointF(event.position())
    return QtCore.QPointF(event.localPos() if hasattr(event, "localPos") else event.posF())


def image_bytes(image) -> bytes:
    """The raw bytes of a QImage (rows with their padding, bytesPerLine apart), copied."""
    return bytes(image_view(image))


def image_view(image) -> memoryview:
    """A read-only view of a QImage's pixels, without copying; valid while ``image`` is unchanged."""
    ptr = image.constBits()
    ptr.setsize(image.sizeInBytes())
    return memoryview(ptr).cast("B")


def writable_image_view(image) -> memoryview:
    """A writable memoryview over a QImage's pixels (detaches the image from shared copies)."""
    ptr = image.bits()
    ptr.setsize(image.sizeInBytes())
    return memoryview(ptr).cast("B")
