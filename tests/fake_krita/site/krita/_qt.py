"""The fake's Qt: the plugin's own shim (``plugin/diffusion_dock/runtime/qt.py``), loaded from its file
under a private name so that no plugin package ``__init__`` runs (inside "Krita" it would register the
plugin while ``krita`` is still being imported).  With the fake ``pykrita`` importable the shim picks
the binding from ``pykrita`` exactly as in Krita; without it (in-process tests), as outside Krita."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SHIM = Path(__file__).resolve().parents[4] / "plugin" / "diffusion_dock" / "runtime" / "qt.py"
NAME = "_fake_krita_qt_shim"

qt = sys.modules.get(NAME)
if qt is None:
    _spec = importlib.util.spec_from_file_location(NAME, SHIM)
    assert _spec is not None and _spec.loader is not None, SHIM
    qt = importlib.util.module_from_spec(_spec)
    sys.modules[NAME] = qt
    _spec.loader.exec_module(qt)

QtCore, QtGui, QtWidgets = qt.QtCore, qt.QtGui, qt.QtWidgets
QObject, QByteArray, QRect, QPoint, Signal = qt.QObject, qt.QByteArray, qt.QRect, qt.QPoint, qt.Signal
QAction, QT_MAJOR, BINDING = qt.QAction, qt.QT_MAJOR, qt.BINDING


def to_bytes(value) -> bytes:
    """What Krita's sip accepts for a QByteArray argument: a QByteArray, bytes or bytearray only
    (PyQt5 refuses memoryview and mmap, so the fake does too)."""
    if isinstance(value, QByteArray):
        return bytes(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    raise TypeError(f"QByteArray expected, got {type(value).__name__}")
