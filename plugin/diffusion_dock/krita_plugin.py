"""Registration inside Krita: the docker, the actions (Tools menu + shortcuts from
``diffusion_dock.action``) and the Layers docker's right-click entries.  Imported by the package
only when it runs inside Krita."""

from __future__ import annotations

import logging
from functools import partial

from krita import DockWidget, DockWidgetFactory, DockWidgetFactoryBase, Extension, Krita

from . import actions as A
from .controller import PanelController
from .dock import DockPanel
from .layer_menu import LayerMenuHook
from .qt import QtWidgets

log = logging.getLogger(__name__)

SUBMENU_NAME = "diffusion_dock_menu"

# One controller for the whole application; part 2 swaps in the real one.
CONTROLLER = PanelController()


class DiffusionDockWidget(DockWidget):
    """Krita's dock window for the Diffusion Dock.  It only hosts the shared ``DockPanel``
    container (a placeholder in part 1 of issue 5: part 2 fills the panel)."""

    def __init__(self):
        super().__init__()
        self.setWindowTitle(A.DOCK_TITLE)
        self.panel = DockPanel(self)
        self.setWidget(self.panel)
        CONTROLLER.register(self.panel)

    def canvasChanged(self, canvas):  # noqa: N802 - Krita's name
        self.panel.canvas_changed()


def window_action(action_id: str):
    """Our QAction in the active window (Krita creates one per window)."""
    try:
        return Krita.instance().action(action_id)
    except Exception:  # noqa: BLE001
        return None


def tools_menu(qwindow):
    """Krita's Tools menu (menubar entry named "tools"), or None."""
    if qwindow is None or qwindow.menuBar() is None:
        return None
    for action in qwindow.menuBar().actions():
        if action.objectName().lower() == "tools" and action.menu() is not None:
            return action.menu()
    return None


class DiffusionDockExtension(Extension):
    def __init__(self, parent):
        super().__init__(parent)
        self.layer_menu = LayerMenuHook(lambda: [window_action(a.id) for a in A.LAYER_MENU])

    def setup(self):
        try:
            self.layer_menu.install()
        except Exception as e:  # noqa: BLE001 - the menu entries are a convenience
            self.layer_menu.failed = f"{type(e).__name__}: {e}"
            log.warning("Diffusion Dock: no layer menu entries (%s)", self.layer_menu.failed)

    def createActions(self, window):  # noqa: N802 - Krita's name
        created = []
        for spec in A.ACTIONS:
            action = window.createAction(spec.id, spec.text, "")
            action.setToolTip(spec.tooltip)
            action.triggered.connect(partial(CONTROLLER.trigger, spec.id, "menu"))
            created.append(action)
        tools = tools_menu(window.qwindow())
        if tools is not None:
            submenu = QtWidgets.QMenu(A.DOCK_TITLE, tools)
            submenu.setObjectName(SUBMENU_NAME)
            submenu.addActions(created)
            tools.addMenu(submenu)
        else:   # no Tools menu found: fall back to Krita's own place for scripts
            for spec in A.ACTIONS:
                window.createAction(spec.id, spec.text, "tools/scripts")


def dock_right():
    """DockWidgetFactoryBase's DockRight (a scoped enum in Krita 6, unscoped before)."""
    scoped = getattr(DockWidgetFactoryBase, "DockPosition", None)
    value = getattr(scoped, "DockRight", None)
    return value if value is not None else DockWidgetFactoryBase.DockRight


_registered = False


def register() -> None:
    global _registered
    if _registered:
        return
    app = Krita.instance()
    app.addExtension(DiffusionDockExtension(app))
    app.addDockWidgetFactory(DockWidgetFactory(A.DOCK_ID, dock_right(), DiffusionDockWidget))
    _registered = True
