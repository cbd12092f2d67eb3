"""The application side of the fake Krita: Krita, Document and Notifier (windows and views: _views.py).

As in Krita (libkis 5.1.5, KisPart, KisMainWindow):
- ``createDocument`` makes a document with one opaque white paint layer "Background" and does not emit
  ``Notifier.imageCreated`` (KisPart::addDocument(doc, notify=false)); ``openDocument`` does.
- Without a window and view (kritarunner, scripts) ``activeDocument()``/``activeWindow()``/
  ``Document.activeNode()`` are None and ``action()`` finds nothing.
- ``boot()`` does what Krita's start-up does for plugins: every extension's ``setup()``, then a main
  window: ``windowIsBeingCreated(window)``, one docker per factory, ``createActions(window)`` per
  extension, ``windowCreated()``.
- ``Window.addView(doc)``: ``viewCreated(view)``, then the view becomes active:
  ``activeViewChanged()`` and every docker of that window gets ``canvasChanged(canvas)``; closing the
  last view gives the dockers ``canvasChanged(None)``.  There is no signal for a changed selection
  (none exists in Krita's API): a docker notices it by looking.
- The window's actions ``edit_undo``/``edit_redo`` undo/redo the active document's steps;
  ``deselect``/``select_all`` change its selection.
"""

from __future__ import annotations

from . import _document as D
from . import _pixels as P
from ._log import KRITA_VERSION, api
from ._qt import QByteArray, QObject, QRect, Signal, to_bytes
from ._views import Window


@api
class Document(QObject):
    def __init__(self, data: D.DocumentData, parent=None):
        super().__init__(parent)
        self._d = data

    def __eq__(self, other):
        return isinstance(other, Document) and other._d is self._d

    def __ne__(self, other):
        return not self.__eq__(other)

    __hash__ = QObject.__hash__

    def _open(self) -> bool:
        return not self._d.closed

    def name(self) -> str:
        return self._d.name if self._open() else ""

    def setName(self, value: str) -> None:
        self._d.name = value

    def fileName(self) -> str:
        return self._d.file_name if self._open() else ""

    def width(self) -> int:
        return self._d.width if self._open() else 0

    def height(self) -> int:
        return self._d.height if self._open() else 0

    def bounds(self) -> QRect:
        return QRect(0, 0, self.width(), self.height())

    def colorModel(self) -> str:
        return self._d.cs.model if self._open() else ""

    def colorDepth(self) -> str:
        return self._d.cs.depth if self._open() else ""

    def colorProfile(self) -> str:
        return self._d.cs.profile if self._open() else ""

    def setColorSpace(self, colorModel: str, colorDepth: str, colorProfile: str) -> bool:
        cs = P.color_space(colorModel, colorDepth, colorProfile)
        if cs is None or not self._open():
            return False
        old = self._d.cs
        for n in [self._d.root, *self._d.walk()]:       # KisImage::convertImageColorSpace
            if n.cs == old and n.kind in (D.PAINT, D.GROUP):
                if n.device is not None:
                    n.device = P.convert_device(n.device, cs)
                n.cs = cs
                if n.projection is not None:
                    n.projection = P.Device(cs)
        self._d.cs, self._d.projection = cs, P.Device(cs)
        self._d.update()
        return True

    def rootNode(self):
        return None if not self._open() else D.Node._wrap(self._d.root)

    def createNode(self, name: str, nodeType: str):
        kind = nodeType.lower()
        if kind not in (D.PAINT, D.GROUP):
            raise NotImplementedError(f"the fake Krita makes paint and group layers only, not {nodeType!r}")
        return D.Node._wrap(D.NodeData(self._d, name, kind, self._d.cs))

    def createGroupLayer(self, name: str):
        return D.GroupLayer(D.NodeData(self._d, name, D.GROUP, self._d.cs))

    def activeNode(self):
        for view in _app()._views():
            if view._doc is self._d:
                return D.Node._wrap(view._node)
        return None

    def setActiveNode(self, value) -> None:
        win = _app()._active
        if win is not None and win._active is not None and win._active._doc is self._d:
            win._active._node = value._d

    def selection(self):
        return None if self._d.selection is None else D.Selection(self._d.selection)

    def setSelection(self, value) -> None:
        root, doc = self._d.root, self._d
        masks = [n for n in root.children if n.kind == D.SELECTION_MASK]
        if value is None:
            for m in masks:
                root.children.remove(m)
            doc.selection = None
            return
        doc.selection = value._d
        if not masks:
            mask = D.NodeData(doc, "Selection Mask", D.SELECTION_MASK, doc.cs)
            mask.parent = root
            root.children.append(mask)
            masks = [mask]
        masks[0].selection = value._d

    def resizeImage(self, x: int, y: int, w: int, h: int) -> None:
        if self._open() and w > 0 and h > 0:
            self._d.resize(x, y, w, h)

    def pixelData(self, x: int, y: int, w: int, h: int) -> QByteArray:
        return QByteArray(self._d.projection.read(x, y, w, h))

    def refreshProjection(self) -> None:
        self._d.update()

    def waitForDone(self) -> None:
        pass                       # the fake does everything synchronously

    def batchmode(self) -> bool:
        return self._d.batchmode

    def setBatchmode(self, value: bool) -> None:
        self._d.batchmode = bool(value)

    def modified(self) -> bool:
        return self._d.modified

    def setModified(self, modified: bool) -> None:
        self._d.modified = bool(modified)

    def annotationTypes(self) -> list:
        return list(self._d.annotations)

    def annotationDescription(self, type: str) -> str:
        return self._d.annotations[type][0]

    def annotation(self, type: str) -> QByteArray:
        return QByteArray(self._d.annotations.get(type, ("", b""))[1])

    def setAnnotation(self, type: str, description: str, annotation) -> None:
        self._d.annotations[type] = (description, to_bytes(annotation))

    def removeAnnotation(self, type: str) -> None:
        self._d.annotations.pop(type, None)

    def clone(self):
        src = self._d
        doc = D.DocumentData(src.width, src.height, src.name, src.cs, src.resolution)
        doc.annotations = dict(src.annotations)
        doc.root = src.root.copy(doc)
        for n in [doc.root, *doc.walk()]:
            n.doc = doc
        doc.selection = src.selection
        doc.update()
        return Document(doc)

    def saveAs(self, filename: str) -> bool:
        D.save(self._d, filename)
        self._d.file_name, self._d.modified = filename, False
        _app()._notifier.imageSaved.emit(filename)
        return True

    def save(self) -> bool:
        return bool(self._d.file_name) and self.saveAs(self._d.file_name)

    def close(self) -> bool:
        app = _app()
        for win in app._windows:
            for view in [v for v in win._views if v._doc is self._d]:
                win._close_view(view)
        if self._d in app._documents:
            app._documents.remove(self._d)
        self._d.closed = True
        app._notifier.imageClosed.emit(self._d.file_name)
        return True


@api
class Notifier(QObject):
    applicationClosing = Signal()
    imageCreated = Signal(object)
    imageSaved = Signal(str)
    imageClosed = Signal(str)
    viewCreated = Signal(object)
    viewClosed = Signal(object)
    windowIsBeingCreated = Signal(object)
    windowCreated = Signal()
    configurationChanged = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self._on = True

    def active(self) -> bool:
        return self._on

    def setActive(self, value: bool) -> None:
        self._on = bool(value)


@api
class Krita(QObject):
    _instance: Krita | None = None

    def __init__(self, parent=None):
        super().__init__(parent)
        self._notifier = Notifier(self)
        self._extensions: list = []
        self._factories: list = []
        self._documents: list[D.DocumentData] = []
        self._windows: list[Window] = []
        self._active: Window | None = None
        self._settings: dict = {}
        self._batch = False

    @staticmethod
    def instance():
        if Krita._instance is None:
            Krita._instance = Krita()
        return Krita._instance

    def version(self) -> str:
        return KRITA_VERSION

    def notifier(self):
        return self._notifier

    def batchmode(self) -> bool:
        return self._batch

    def setBatchmode(self, value: bool) -> None:
        self._batch = bool(value)

    def createDocument(self, width: int, height: int, name: str, colorModel: str, colorDepth: str,
                       profile: str, resolution: float):
        cs = P.color_space(colorModel, colorDepth, profile)
        if cs is None:
            return None
        doc = D.DocumentData(width, height, name, cs, resolution)
        bg = D.NodeData(doc, "Background", D.PAINT, cs)
        white = P.WHITE.get((cs.model, cs.depth)) or cs.encode([0.0] * (cs.channels - 1) + [1.0])   # Qt::white
        bg.device = P.Device(cs, default=white, canvas=(0, 0, width, height))   # white everywhere (seen)
        bg.parent = doc.root
        doc.root.children.append(bg)
        doc.update()
        self._documents.append(doc)
        return Document(doc)

    def openDocument(self, filename: str):
        doc = D.load(filename)
        if doc is None:
            return None
        self._documents.append(doc)
        wrapper = Document(doc)
        self._notifier.imageCreated.emit(wrapper)
        return wrapper

    def documents(self) -> list:
        return [Document(d) for d in self._documents]

    def activeDocument(self):
        view = self._active._active if self._active is not None else None
        return None if view is None else Document(view._doc)

    def setActiveDocument(self, value) -> None:
        if self._active is not None:
            for view in self._active._views:
                if view._doc is value._d:
                    self._active.showView(view)

    def activeWindow(self):
        return self._active

    def windows(self) -> list:
        return list(self._windows)

    def views(self) -> list:
        return list(self._views())

    def _views(self):
        for w in self._windows:
            yield from w._views

    def openWindow(self):
        window = Window()
        self._notifier.windowIsBeingCreated.emit(window)
        self._windows.append(window)
        self._active = window
        for factory in self._factories:
            window._add_docker(factory)
        for ext in self._extensions:
            ext.createActions(window)
        self._notifier.windowCreated.emit()
        return window

    def dockers(self) -> list:
        return [] if self._active is None else list(self._active._docks)

    def action(self, name: str):
        if self._active is None:
            return None
        return next((a for a in self._active._qwindow.actions() if a.objectName() == name), None)

    def actions(self) -> list:
        return [] if self._active is None else list(self._active._qwindow.actions())

    def extensions(self) -> list:
        return list(self._extensions)

    def addExtension(self, _extension) -> None:
        self._extensions.append(_extension)

    def addDockWidgetFactory(self, _factory) -> None:
        self._factories.append(_factory)

    def readSetting(self, group: str, name: str, defaultValue: str) -> str:
        return self._settings.get((group, name), defaultValue)

    def writeSetting(self, group: str, name: str, value: str) -> None:
        self._settings[(group, name)] = value

    def _doc(self):
        doc = self.activeDocument()
        return None if doc is None else doc._d

    def _undo(self) -> None:
        d = self._doc()
        if d is not None:
            d.undo_step()

    def _redo(self) -> None:
        d = self._doc()
        if d is not None:
            d.redo_step()

    def _deselect(self) -> None:
        doc = self.activeDocument()
        if doc is not None:
            doc.setSelection(None)

    def _select_all(self) -> None:
        doc = self.activeDocument()
        if doc is not None:
            sel = D.Selection()
            sel.select(0, 0, doc.width(), doc.height(), 255)
            doc.setSelection(sel)


def _app() -> Krita:
    if Krita._instance is None:
        Krita._instance = Krita()
    return Krita._instance


def boot() -> Window:
    """Krita's start-up after the plugins were imported: extensions set up, then the first window."""
    app = _app()
    for ext in app._extensions:
        ext.setup()
    return app.openWindow()
