"""Entries in Krita's Layers docker right-click menu, through an application-wide event filter.

Krita has no API for that menu: ``KisLayerBox`` builds a local QMenu when its layer view (a
``NodeView`` named ``listLayers``) gets a context-menu request, and runs it.  The filter notes the
``ContextMenu`` event on that view's viewport and, on the ``Show`` of the next QMenu (shown
synchronously while that event is handled), appends a separator and our actions.  A zero-delay
timer disarms it afterwards, so no other menu is touched.

This is fragile by nature.  Any failure uninstalls the filter and is logged once; the same actions
stay reachable from the Tools menu, the shortcuts and the dock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..runtime.qt import QEvent, QObject, QTimer, QtWidgets

log = logging.getLogger(__name__)

LAYER_VIEW_NAME = "listLayers"
LAYER_BOX_NAME = "KisLayerBox"


def is_layer_view_viewport(obj) -> bool:
    """Whether ``obj`` is the viewport (or the view itself) of the Layers docker's layer list."""
    if not isinstance(obj, QtWidgets.QWidget):
        return False
    view = obj if obj.objectName() == LAYER_VIEW_NAME else obj.parentWidget()
    return isinstance(view, QtWidgets.QAbstractItemView) and view.objectName() == LAYER_VIEW_NAME


class LayerMenuHook(QObject):
    """``actions()`` returns the QActions to append (evaluated when the menu opens)."""

    def __init__(self, actions: Callable[[], list], parent=None):
        super().__init__(parent)
        self._actions = actions
        self._armed = False
        self.installed = False
        self.failed: str | None = None
        self.menus_extended = 0

    def install(self, app=None) -> bool:
        app = app or QtWidgets.QApplication.instance()
        if app is None:
            self.failed = "no QApplication"
            return False
        app.installEventFilter(self)
        # Out before the application goes: a filter still installed while the interpreter shuts down is
        # called for the widgets' last events with half its Python gone (a crash on exit, PyQt5).
        app.aboutToQuit.connect(self.uninstall)
        self.installed = True
        return True

    def uninstall(self) -> None:
        app = QtWidgets.QApplication.instance()
        if app is not None and self.installed:
            app.removeEventFilter(self)
        self.installed = False

    def _disarm(self) -> None:
        self._armed = False

    def eventFilter(self, obj, event):
        try:
            kind = event.type()
            if kind == QEvent.Type.ContextMenu and is_layer_view_viewport(obj):
                self._armed = True
                QTimer.singleShot(0, self._disarm)
            elif kind == QEvent.Type.Show and self._armed and isinstance(obj, QtWidgets.QMenu):
                self._armed = False
                self.extend(obj)
        except Exception as e:
            self.failed = f"{type(e).__name__}: {e}"
            log.warning("Diffusion Dock: layer menu entries disabled (%s)", self.failed)
            self.uninstall()
        return False

    def extend(self, menu) -> None:
        actions = [a for a in self._actions() if a is not None]
        if not actions:
            return
        menu.addSeparator()
        for action in actions:
            menu.addAction(action)
        self.menus_extended += 1
