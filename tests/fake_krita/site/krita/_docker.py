"""Dockers and extensions of the fake Krita: ``DockWidget`` (canvasChanged is called by the window
whenever its active view changes, with None when it has none), ``DockWidgetFactoryBase`` and the
Python ``DockWidgetFactory`` of Krita's ``krita`` package, and ``Extension`` (setup once, then
createActions per window).

``DockWidgetFactoryBase.DockPosition`` is what sip makes of the C++ enum: on PyQt5 an int enum whose
members are also attributes of the class (``DockWidgetFactoryBase.DockRight``); on PyQt6 a scoped
``enum.Enum`` only (``DockWidgetFactoryBase.DockPosition.DockRight``), which is what breaks plugins
in Krita 6 that use the short form.
"""

from __future__ import annotations

import enum

from ._log import api
from ._qt import QT_MAJOR, QObject, QtWidgets

_POSITIONS = ["DockTornOff", "DockTop", "DockBottom", "DockRight", "DockLeft", "DockMinimized"]
DockPosition = (enum.IntEnum if QT_MAJOR == 5 else enum.Enum)("DockPosition", [(n, i) for i, n in enumerate(_POSITIONS)])


@api
class DockWidget(QtWidgets.QDockWidget):
    def __init__(self):
        super().__init__()
        self._canvas = None

    def canvas(self):
        return self._canvas

    def canvasChanged(self, canvas) -> None:      # pure virtual in Krita: a docker must define it
        raise NotImplementedError("DockWidget.canvasChanged is pure virtual")

    def _set_canvas(self, canvas) -> None:         # DockWidget::setCanvas / unsetCanvas
        self._canvas = canvas
        self.canvasChanged(canvas)


@api
class DockWidgetFactoryBase:
    DockPosition = DockPosition

    def __init__(self, _id: str, _dockPosition):
        if QT_MAJOR == 6 and not isinstance(_dockPosition, DockPosition):
            raise TypeError("DockWidgetFactoryBase(): argument 2 has unexpected type "
                            f"'{type(_dockPosition).__name__}'")
        self._id, self._position = _id, DockPosition(_dockPosition)

    def id(self) -> str:
        return self._id

    def createDockWidget(self):
        raise NotImplementedError("DockWidgetFactoryBase.createDockWidget is pure virtual")


if QT_MAJOR == 5:
    for _m in DockPosition:
        setattr(DockWidgetFactoryBase, _m.name, _m)


class DockWidgetFactory(DockWidgetFactoryBase):
    """krita/dockwidgetfactory.py (Python, shipped with Krita)."""

    def __init__(self, _id, _dockPosition, _klass):
        super().__init__(_id, _dockPosition)
        self._klass = _klass

    def createDockWidget(self):
        return self._klass()


@api
class Extension(QObject):
    def __init__(self, parent=None):
        super().__init__(parent)

    def setup(self) -> None:
        raise NotImplementedError("Extension.setup is pure virtual")

    def createActions(self, window) -> None:
        raise NotImplementedError("Extension.createActions is pure virtual")
