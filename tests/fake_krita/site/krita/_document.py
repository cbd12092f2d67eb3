"""Documents, nodes, selections and info objects of the fake Krita (the semantics of libkis 5.1.5's
Document.cpp, Node.cpp, Selection.cpp and KisImage where the plugin depends on them).

- Wrappers are new Python objects on every call (``rootNode()``, ``childNodes()``, ...), compared with
  ``==`` on what they wrap, as sip wrappers of Krita's C++ objects are.
- Nodes are listed bottom to top.  ``addChildNode(child, None)`` puts the child at the top;
  ``addChildNode(child, above)`` directly above ``above``.  Adding and removing a node are undo steps
  (``Krita.instance().action("edit_undo")``); pixels, names and locks are not.
- ``setPixelData`` and ``move`` change a node without updating the image: ``Document.pixelData`` (the
  projection) and a group's ``projectionPixelData`` change on ``refreshProjection()`` or when a node is
  added or removed (then everywhere: seen on Krita 5.1.5).  A short buffer is refused (nothing
  written), as 5.1.5's Node.cpp does and as seen.
- The document's selection is a ``selectionmask`` node named "Selection Mask" at the top of the root
  (``KisImage::setGlobalSelection``), sharing the Selection object it was given; ``selection()`` is
  None without one.  Selections are 8-bit; their bounds are the exact bounds of non-zero pixels.
- ``resizeImage(x, y, w, h)`` makes the canvas w×h and moves every layer and the selection by
  (-x, -y), cropping nothing (KisImage::resizeImage); one undo step.
- ``saveAs``/``openDocument`` keep layers, UUIDs and annotations in the fake's own file format
  (a zip, not a real .kra).
"""

from __future__ import annotations

import json
import zipfile

from . import _pixels as P
from ._log import KRITA_51, api
from ._qt import QByteArray, QObject, QRect, QtCore, to_bytes

PAINT, GROUP, SELECTION_MASK = "paintlayer", "grouplayer", "selectionmask"


class NodeData:
    def __init__(self, doc, name: str, kind: str, cs: P.ColorSpace, uuid=None):
        self.doc, self.name, self.kind, self.cs = doc, name, kind, cs
        self.uuid = uuid or QtCore.QUuid.createUuid().toString()
        self.device = P.Device(cs) if kind == PAINT else None
        self.projection = P.Device(cs) if kind == GROUP else None
        self.children: list[NodeData] = []
        self.parent: NodeData | None = None
        self.visible, self.locked, self.opacity, self.x, self.y = True, False, 255, 0, 0
        self.selection: SelectionData | None = None

    def copy(self, doc) -> NodeData:
        n = NodeData(doc, self.name, self.kind, self.cs, self.uuid)
        n.device = self.device.copy() if self.device else None
        n.projection = self.projection.copy() if self.projection else None
        n.visible, n.locked, n.opacity, n.x, n.y = self.visible, self.locked, self.opacity, self.x, self.y
        n.selection = self.selection
        for c in self.children:
            cc = c.copy(doc)
            cc.parent = n
            n.children.append(cc)
        return n

    def exact_bounds(self) -> tuple[int, int, int, int]:
        if self.device is not None:
            return self.device.exact_bounds()
        if self.projection is not None:
            return self.projection.exact_bounds()
        return (0, 0, 0, 0)

    def render(self) -> P.Device | None:
        """This node's pixels as they are now (a group: its children composited)."""
        if self.kind == PAINT:
            return self.device if self.device.cs == self.doc.cs else P.convert_device(self.device, self.doc.cs)
        if self.kind != GROUP:
            return None
        out = P.Device(self.doc.cs)
        for c in self.children:
            dev = c.render() if c.visible else None
            if dev is not None:
                P.composite_over(out, dev, c.opacity / 255)
        return out


class SelectionData:
    def __init__(self):
        self.device = P.Device(None, 1)


class DocumentData:
    def __init__(self, width: int, height: int, name: str, cs: P.ColorSpace, resolution: float):
        self.width, self.height, self.name, self.cs, self.resolution = width, height, name, cs, resolution
        self.file_name = ""
        self.root = NodeData(self, "root", GROUP, cs)
        self.annotations: dict[str, tuple[str, bytes]] = {}
        self.selection: SelectionData | None = None
        self.batchmode = self.modified = self.closed = False
        self.undo: list[tuple] = []
        self.redo: list[tuple] = []
        self.projection = P.Device(cs)

    def walk(self, node=None):
        for c in (node or self.root).children:
            yield c
            yield from self.walk(c)

    def update(self, rect: tuple[int, int, int, int] | None = None) -> None:
        """Recomposite the image (and every group's projection) inside ``rect`` (None: everywhere)."""
        x, y, w, h = rect if rect is not None else (0, 0, self.width, self.height)
        if w <= 0 or h <= 0:
            return
        for node in [self.root, *self.walk()]:
            if node.kind == GROUP:
                target = self.projection if node is self.root else node.projection
                target.write(node.render().read(x, y, w, h), x, y, w, h)

    def step(self, kind: str, parent: NodeData, node: NodeData, index: int) -> None:
        self.undo.append((kind, parent, node, index))
        self.redo.clear()
        self.modified = True

    def resize(self, x: int, y: int, w: int, h: int) -> None:
        """``KisImage::resizeImage(QRect(x, y, w, h))``: the canvas becomes w×h and every layer and the
        selection move by (-x, -y), nothing cropped; one undo step ("Resize Image")."""
        self.undo.append(("resize", None, None, (x, y, w, h, self.width, self.height)))
        self.redo.clear()
        self.modified = True
        self._resize(-x, -y, w, h)

    def _resize(self, dx: int, dy: int, w: int, h: int) -> None:
        self.width, self.height = w, h
        for n in self.walk():
            for dev in (n.device, n.projection):
                if dev is not None:
                    dev.x0 += dx
                    dev.y0 += dy
                    if dev.canvas is not None:        # a background's default pixel fills the new canvas
                        dev.canvas = (0, 0, w, h)
            if n.device is not None:
                n.x, n.y = n.x + dx, n.y + dy
        if self.selection is not None:
            self.selection.device.x0 += dx
            self.selection.device.y0 += dy
        self.projection = P.Device(self.cs)
        for n in self.walk():
            if n.projection is not None:
                n.projection = P.Device(n.cs)
        self.update()

    def apply(self, kind: str, parent: NodeData, node: NodeData, index, forward: bool) -> None:
        if kind == "resize":
            x, y, w, h, ow, oh = index
            self._resize(-x, -y, w, h) if forward else self._resize(x, y, ow, oh)
            return
        if (kind == "add") == forward:
            parent.children.insert(index, node)
            node.parent = parent
        else:
            parent.children.remove(node)
            node.parent = None
        self.update()

    def undo_step(self) -> None:
        if self.undo:
            s = self.undo.pop()
            self.apply(*s, forward=False)
            self.redo.append(s)

    def redo_step(self) -> None:
        if self.redo:
            s = self.redo.pop()
            self.apply(*s, forward=True)
            self.undo.append(s)


def _rect(b: tuple[int, int, int, int]) -> QRect:
    return QRect(*b)


@api
class Node(QObject):
    def __init__(self, data: NodeData, parent=None):   # Krita makes nodes; scripts get them from a Document
        super().__init__(parent)
        self._d = data

    def __eq__(self, other):
        return isinstance(other, Node) and other._d is self._d

    def __ne__(self, other):
        return not self.__eq__(other)

    __hash__ = QObject.__hash__

    @staticmethod
    def _wrap(data: NodeData | None):
        if data is None:
            return None
        return GroupLayer(data) if data.kind == GROUP else Node(data)     # Node::createNode's subclasses

    def childNodes(self) -> list:
        return [Node._wrap(c) for c in self._d.children]

    def addChildNode(self, child, above) -> bool:
        doc, c = self._d.doc, child._d
        if c.parent is not None:
            c.parent.children.remove(c)
        index = self._d.children.index(above._d) + 1 if above is not None else len(self._d.children)
        self._d.children.insert(index, c)
        c.parent = self._d
        doc.step("add", self._d, c, index)
        doc.update()                  # seen on Krita 5.1.5: the whole image, also pending setPixelData

        return True

    def removeChildNode(self, child) -> bool:
        return child.remove()

    def remove(self) -> bool:
        d = self._d
        if d.parent is None:
            return False
        parent, index = d.parent, d.parent.children.index(d)
        parent.children.remove(d)
        d.parent = None
        d.doc.step("remove", parent, d, index)
        d.doc.update()
        return True

    def colorModel(self) -> str:
        return self._d.cs.model

    def colorDepth(self) -> str:
        return self._d.cs.depth

    def colorProfile(self) -> str:
        return self._d.cs.profile

    def setColorSpace(self, colorModel: str, colorDepth: str, colorProfile: str) -> bool:
        if self._d.kind not in (PAINT, GROUP) or not colorProfile:
            return False          # Node.cpp: layers only, and the profile is looked up by name
        cs = P.color_space(colorModel, colorDepth, colorProfile)
        if cs is None:
            return False
        if self._d.device is not None:
            self._d.device = P.convert_device(self._d.device, cs)
        self._d.cs = cs
        return True

    def locked(self) -> bool:
        return self._d.locked

    def setLocked(self, value: bool) -> None:
        self._d.locked = bool(value)

    def name(self) -> str:
        return self._d.name

    def setName(self, value: str) -> None:
        self._d.name = value

    def visible(self) -> bool:
        return self._d.visible

    def setVisible(self, value: bool) -> None:
        self._d.visible = bool(value)

    def opacity(self) -> int:
        return self._d.opacity

    def setOpacity(self, value: int) -> None:
        self._d.opacity = max(0, min(255, int(value)))

    def parentNode(self):
        return Node._wrap(self._d.parent)

    def type(self) -> str:
        return self._d.kind

    def uniqueId(self):
        return QtCore.QUuid(self._d.uuid)

    def pixelData(self, x: int, y: int, w: int, h: int) -> QByteArray:
        if self._d.device is None:
            return QByteArray()                       # groups and masks have no paint device
        return QByteArray(self._d.device.read(x, y, w, h))

    def projectionPixelData(self, x: int, y: int, w: int, h: int) -> QByteArray:
        dev = self._d.device if self._d.kind == PAINT else self._d.projection
        return QByteArray() if dev is None else QByteArray(dev.read(x, y, w, h))

    def setPixelData(self, value, x: int, y: int, w: int, h: int):
        data = to_bytes(value)
        ok = self._d.device is not None and len(data) >= w * h * self._d.cs.pixel_size
        if ok:
            self._d.device.write(data, x, y, w, h)
        return None if KRITA_51 else ok          # void in 5.1's Node.sip, bool later

    def bounds(self) -> QRect:
        return _rect(self._d.exact_bounds())

    def move(self, x: int, y: int) -> None:
        d = self._d
        for dev in (d.device, d.projection):
            if dev is not None:
                dev.x0 += x - d.x
                dev.y0 += y - d.y
        d.x, d.y = x, y

    def position(self):
        return QtCore.QPoint(self._d.x, self._d.y)


@api
class GroupLayer(Node):
    pass


@api
class Selection(QObject):
    def __init__(self, parent=None):
        super().__init__(parent if isinstance(parent, QObject) or parent is None else None)
        self._d = parent if isinstance(parent, SelectionData) else SelectionData()

    def __eq__(self, other):
        return isinstance(other, Selection) and other._d is self._d

    def __ne__(self, other):
        return not self.__eq__(other)

    __hash__ = QObject.__hash__

    def _bounds(self):
        return self._d.device.exact_bounds()

    def x(self) -> int:
        return self._bounds()[0]

    def y(self) -> int:
        return self._bounds()[1]

    def width(self) -> int:
        return self._bounds()[2]

    def height(self) -> int:
        return self._bounds()[3]

    def pixelData(self, x: int, y: int, w: int, h: int) -> QByteArray:
        return QByteArray(self._d.device.read(x, y, w, h))

    def setPixelData(self, value, x: int, y: int, w: int, h: int) -> None:
        self._d.device.write(to_bytes(value), x, y, w, h)

    def select(self, x: int, y: int, w: int, h: int, value: int) -> None:
        self._d.device.fill(bytes([max(0, min(255, int(value)))]), x, y, w, h)

    def clear(self) -> None:
        self._d.device = P.Device(None, 1)

    def duplicate(self):
        s = Selection()
        s._d.device = self._d.device.copy()
        return s


@api
class InfoObject(QObject):
    def __init__(self, parent=None):
        super().__init__(parent)
        self._props: dict = {}

    def properties(self) -> dict:
        return dict(self._props)

    def setProperties(self, value: dict) -> None:
        self._props = dict(value)

    def property(self, key):
        return self._props.get(key)

    def setProperty(self, key, value) -> None:
        self._props[key] = value


def save(doc: DocumentData, path: str) -> None:
    nodes, blobs = [], {}

    def put(n: NodeData, parent: str | None):
        nodes.append({"uuid": n.uuid, "name": n.name, "kind": n.kind, "cs": [n.cs.model, n.cs.depth, n.cs.profile],
                      "parent": parent, "visible": n.visible, "locked": n.locked, "opacity": n.opacity,
                      "pos": [n.x, n.y], "dev": None if n.device is None else [n.device.x0, n.device.y0,
                                                                                n.device.w, n.device.h],
                      "default": None if n.device is None else [n.device.default.hex(), n.device.canvas]})
        if n.device is not None:
            blobs[n.uuid] = bytes(n.device.buf)
        for c in n.children:
            if c.kind != SELECTION_MASK:
                put(c, n.uuid)

    for c in doc.root.children:
        if c.kind != SELECTION_MASK:
            put(c, None)
    manifest = {"fake-krita": 1, "size": [doc.width, doc.height], "name": doc.name, "resolution": doc.resolution,
                "cs": [doc.cs.model, doc.cs.depth, doc.cs.profile], "nodes": nodes,
                "annotations": {k: v[0] for k, v in doc.annotations.items()}}
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("manifest.json", json.dumps(manifest))
        for k, (_, data) in doc.annotations.items():
            z.writestr(f"annotations/{k}", data)
        for uuid, data in blobs.items():
            z.writestr(f"layers/{uuid}", data)


def load(path: str) -> DocumentData | None:
    try:
        with zipfile.ZipFile(path) as z:
            m = json.loads(z.read("manifest.json"))
            cs = P.ColorSpace(*m["cs"])
            doc = DocumentData(*m["size"], m["name"], cs, m["resolution"])
            doc.annotations = {k: (d, z.read(f"annotations/{k}")) for k, d in m["annotations"].items()}
            by_id = {}
            for rec in m["nodes"]:
                n = NodeData(doc, rec["name"], rec["kind"], P.ColorSpace(*rec["cs"]), rec["uuid"])
                n.visible, n.locked, n.opacity, (n.x, n.y) = rec["visible"], rec["locked"], rec["opacity"], rec["pos"]
                if rec["dev"] is not None:
                    n.device.default, n.device.canvas = bytes.fromhex(rec["default"][0]), rec["default"][1]
                    n.device.x0, n.device.y0, n.device.w, n.device.h = rec["dev"]
                    n.device.buf = bytearray(z.read(f"layers/{rec['uuid']}"))
                parent = by_id[rec["parent"]] if rec["parent"] else doc.root
                n.parent = parent
                parent.children.append(n)
                by_id[n.uuid] = n
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    doc.file_name = path
    doc.update()
    return doc
