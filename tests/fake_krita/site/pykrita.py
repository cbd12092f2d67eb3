"""Fake of Krita's built-in ``pykrita`` module (what tells a plugin that it runs inside Krita).

``FAKE_KRITA_VERSION`` (default: 5.1.5 on PyQt5, 6.0.0 on PyQt6) decides what it offers: Krita 5.1
has no ``qt_major_version()``; Krita 5.3 and 6.x have it.  ``FAKE_KRITA_QT=5|6`` picks the binding
(default: PyQt6 when installed, else PyQt5), as Krita's own Qt would.
"""

from __future__ import annotations

import importlib.util
import os


def _major() -> int:
    forced = os.environ.get("FAKE_KRITA_QT", "").strip()
    if forced in ("5", "6"):
        return int(forced)
    return 6 if importlib.util.find_spec("PyQt6") is not None else 5


QT_MAJOR = _major()
VERSION = os.environ.get("FAKE_KRITA_VERSION", "").strip() or ("6.0.0" if QT_MAJOR == 6 else "5.1.5")

if not VERSION.startswith("5.1"):       # added in Krita 5.3 / 6.0
    def qt_major_version() -> int:
        return QT_MAJOR
