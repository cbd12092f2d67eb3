"""Registration inside Krita: the docker, the actions (Tools menu + shortcuts from
``diffusion_dock.action``) and the Layers docker's right-click entries.  Imported by the package
only when it runs inside Krita."""

from __future__ import annotations

import logging
import weakref
from functools import partial

from krita import DockWidget, DockWidgetFactory, DockWidgetFactoryBase, Extension, Krita

from ..panel import actions as A
from ..panel.controller import DockController
from ..panel.dock import DockPanel
from ..runtime import aio
from ..runtime.qt import QTimer, QtWidgets
from ..session.dock_session import shared_session
from .host import KritaHost
from .layer_menu import LayerMenuHook

log = logging.getLogger(__name__)

SUBMENU_NAME = "diffusion_dock_menu"
_EXIT_HOOKED: weakref.WeakSet = weakref.WeakSet()   # sessions whose engine is killed when Krita quits

# One controller for the whole application: the actions of every window reach the active window's dock.
CONTROLLER = DockController()


def session():
    """The application's dock session: one engine and one results history for every window.  The
    engine starts when a dock is first shown; qasync's loop rides on Krita's own Qt event loop."""
    aio.loop()
    s = shared_session(autostart=True)
    if s not in _EXIT_HOOKED:
        app = QtWidgets.QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(s.kill_engine_now)
        _EXIT_HOOKED.add(s)
    return s


def context_key(app=None):
    """What the dock shows about the editor's state: the active document, its selection's bounds and
    its active layer.  Krita's API has no signal for a changed selection or active layer (5.1 to 6.x),
    so the docker compares this key on a timer."""
    doc = (app or Krita.instance()).activeDocument()
    if doc is None:
        return None
    sel = doc.selection()
    node = doc.activeNode()
    return (doc.rootNode() is None, doc.fileName(), doc.name(),
            None if sel is None else (sel.x(), sel.y(), sel.width(), sel.height()),
            None if node is None else node.uniqueId().toString())


class DiffusionDockWidget(DockWidget):
    """Krita's dock window for the Diffusion Dock: it hosts the shared ``DockPanel``.  The panel's
    context follows Krita: ``canvasChanged`` (another view or document), and a look every
    ``WATCH_MS`` while the dock is visible (the selection and the active layer, which have no signal)."""

    WATCH_MS = 300

    def __init__(self):
        super().__init__()
        self.setWindowTitle(A.DOCK_TITLE)
        self.panel = DockPanel(self, host=KritaHost(), session=session())
        self.setWidget(self.panel)
        CONTROLLER.register(self.panel)
        self._context = None
        self.watch = QTimer(self)
        self.watch.setInterval(self.WATCH_MS)
        self.watch.timeout.connect(self.look)
        self.watch.start()

    def canvasChanged(self, canvas):
        self._context = self._key()
        self.panel.canvas_changed()

    def _key(self):
        try:
            return context_key()
        except RuntimeError:          # a wrapper deleted under us (a closing document)
            return None

    def look(self) -> bool:
        """Refresh the panel when the selection, the active layer or the document changed; True if it did."""
        if not self.isVisible():
            return False
        key = self._key()
        if key == self._context:
            return False
        self._context = key
        self.panel.canvas_changed()
        return True


def window_action(action_id: str):
    """Our QAction in the active window (Krita creates one per window)."""
    try:
        return Krita.instance().action(action_id)
    except Exception:
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
        except Exception as e:
            self.layer_menu.failed = f"{type(e).__name__}: {e}"
            log.warning("Diffusion Dock: no layer menu entries (%s)", self.layer_menu.failed)

    def createActions(self, window):
        created = []
        for spec in A.ACTIONS:
            action = window.createAction(spec.id, spec.text, "")
            action.setToolTip(spec.tooltip)
            action.triggered.connect(partial(CONTROLLER.trigger, spec.id, "menu"))
            created.append(action)
        # Krita fills the menu bar after this call returns (and deletes ``window``, a temporary
        # wrapper): add the submenu to the QMainWindow once its menus exist.
        QTimer.singleShot(0, partial(add_tools_submenu, window.qwindow(), created))


def add_tools_submenu(qwindow, actions) -> bool:
    """Tools › Diffusion Dock › (our actions); False when Krita's Tools menu was not found (the
    actions then stay reachable through their shortcuts, the dock and the layer menu)."""
    try:
        tools = tools_menu(qwindow)
        if tools is None:
            log.warning("Diffusion Dock: Krita's Tools menu was not found; no menu entries")
            return False
        submenu = QtWidgets.QMenu(A.DOCK_TITLE, tools)
        submenu.setObjectName(SUBMENU_NAME)
        submenu.addActions(actions)
        tools.addMenu(submenu)
        return True
    except Exception as e:
        log.warning("Diffusion Dock: no Tools menu entries (%s: %s)", type(e).__name__, e)
        return False


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
