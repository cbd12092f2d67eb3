"""A fake of Krita's ``krita`` module for tests: the API surface Diffusion Dock uses, with Krita's
semantics (see the modules' notes), on the Qt binding Krita would give a plugin (PyQt5 for Krita 5,
PyQt6 for Krita 6), through the plugin's own shim.  Its methods are checked against Krita's .sip files
(tests/plugin/test_fake_krita_api.py).

Like Krita 5.3/6's own ``krita`` package, it refuses imports of the other PyQt when ``pykrita``
offers ``qt_major_version`` ("This version of Krita is not compatible with PyQt5!").  Like Krita, it
has a QApplication before any plugin code runs.
"""

from __future__ import annotations

import builtins
import sys

from . import _qt
from ._app import Document, Krita, Notifier, boot
from ._docker import DockWidget, DockWidgetFactory, DockWidgetFactoryBase, Extension
from ._document import GroupLayer, InfoObject, Node, Selection
from ._log import CALLS, KRITA_VERSION
from ._views import Canvas, View, Window

__all__ = ["CALLS", "KRITA_VERSION", "Canvas", "DockWidget", "DockWidgetFactory", "DockWidgetFactoryBase",
           "Document", "Extension", "GroupLayer", "InfoObject", "Krita", "Node", "Notifier", "Selection", "View",
           "Window", "boot"]

FAKE = True

_pykrita = sys.modules.get("pykrita")
if _pykrita is not None and hasattr(_pykrita, "qt_major_version") and not getattr(builtins, "_fake_krita_hook", None):
    _wrong = ("PyQt6" if _pykrita.qt_major_version() == 5 else "PyQt5").casefold()
    _real_import = builtins.__import__

    def _avoid_wrong_pyqt(name, globals=None, locals=None, fromlist=(), level=0):
        n = name.casefold()
        if level == 0 and (n == _wrong or n.startswith(_wrong + ".")):
            raise ModuleNotFoundError(f"This version of Krita is not compatible with {name.split('.')[0]}!",
                                      name=name)
        return _real_import(name, globals, locals, fromlist, level)

    builtins.__import__ = _avoid_wrong_pyqt
    builtins._fake_krita_hook = True

if _qt.QtWidgets.QApplication.instance() is None:
    _APP = _qt.QtWidgets.QApplication(["krita"])
