"""Windows, views and canvases of the fake Krita (see _app.py for what they do, as in Krita)."""

from __future__ import annotations

from . import _app as A
from . import _document as D
from ._docker import DockPosition
from ._log import api
from ._qt import QAction, QObject, QtCore, QtWidgets, Signal

AREAS = {"DockTop": "TopDockWidgetArea", "DockBottom": "BottomDockWidgetArea", "DockRight": "RightDockWidgetArea",
         "DockLeft": "LeftDockWidgetArea", "DockTornOff": "RightDockWidgetArea", "DockMinimized": "RightDockWidgetArea"}


@api
class Canvas(QObject):
    def __init__(self, view, parent=None):
        super().__init__(parent)
        self._view = view

    def view(self):
        return self._view


@api
class View(QObject):
    def __init__(self, window, doc: D.DocumentData, parent=None):
        super().__init__(parent)
        self._window, self._doc = window, doc
        layers = [n for n in doc.root.children if n.kind != D.SELECTION_MASK]
        self._node = layers[-1] if layers else None

    def window(self):
        return self._window

    def document(self):
        return A.Document(self._doc)

    def visible(self) -> bool:
        return self._window._active is self

    def canvas(self):
        return Canvas(self)


@api
class Window(QObject):
    windowClosed = Signal()
    themeChanged = Signal()
    activeViewChanged = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self._qwindow = QtWidgets.QMainWindow()
        self._qwindow.setObjectName("MainWindow#1")
        self._views: list[View] = []
        self._active: View | None = None
        self._docks: list = []
        bar = self._qwindow.menuBar()
        for name in ("file", "edit", "view", "image", "layer", "select", "tools", "settings", "help"):
            menu = bar.addMenu(name.capitalize())
            menu.setObjectName(name)
            menu.menuAction().setObjectName(name)
            if name == "tools":
                menu.addMenu("Scripts").setObjectName("scripts")
        layers = QtWidgets.QDockWidget("Layers", self._qwindow)
        layers.setObjectName("KisLayerBox")
        view = QtWidgets.QListView(layers)
        view.setObjectName("listLayers")
        layers.setWidget(view)
        self._qwindow.addDockWidget(QtCore.Qt.DockWidgetArea.RightDockWidgetArea, layers)
        app = A._app()
        for name, slot in (("edit_undo", app._undo), ("edit_redo", app._redo), ("deselect", app._deselect),
                           ("select_all", app._select_all)):
            self.createAction(name, name.replace("_", " ").title(), "").triggered.connect(slot)

    def qwindow(self):
        return self._qwindow

    def views(self) -> list:
        return list(self._views)

    def activeView(self):
        return self._active

    def addView(self, document):
        view = View(self, document._d, self)
        self._views.append(view)
        A._app()._notifier.viewCreated.emit(view)
        self.showView(view)
        return view

    def showView(self, view) -> None:
        if view is self._active:
            return
        self._active = view
        self.activeViewChanged.emit()
        for dock in self._docks:
            dock._set_canvas(None if view is None else Canvas(view))

    def createAction(self, id: str, text: str = "", menuLocation: str = "tools/scripts"):
        action = QAction(text or id, self._qwindow)
        action.setObjectName(id)
        self._qwindow.addAction(action)
        if menuLocation:
            menu = self._qwindow.menuBar()
            for part in menuLocation.split("/"):
                menu = menu.findChild(QtWidgets.QMenu, part) if menu is not None else None
            if menu is not None:
                menu.addAction(action)
        return action

    def activate(self) -> None:
        A._app()._active = self

    def close(self) -> None:
        for view in list(self._views):
            self._close_view(view)
        app = A._app()
        app._windows.remove(self)
        if app._active is self:
            app._active = app._windows[-1] if app._windows else None
        self.windowClosed.emit()
        self._qwindow.close()

    def _close_view(self, view) -> None:
        self._views.remove(view)
        A._app()._notifier.viewClosed.emit(view)
        if view is self._active:
            self.showView(self._views[-1] if self._views else None)

    def _add_docker(self, factory) -> None:
        dock = factory.createDockWidget()
        dock.setObjectName(factory.id())
        area = getattr(QtCore.Qt.DockWidgetArea, AREAS[DockPosition(factory._position).name])
        self._qwindow.addDockWidget(area, dock)
        self._docks.append(dock)
