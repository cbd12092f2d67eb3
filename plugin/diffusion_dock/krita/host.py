"""The host interface on Krita's Python API (Krita 5.1 to 6.x).  Importable only inside Krita.

Facts this relies on (checked on Krita 5.1.5, see docs in the repository's reference notes):

- ``Node.pixelData`` returns a copy in image coordinates (transparent zeros outside the layer's
  content), in the layer's own colour space: U8/U16 as B,G,R,A and F16/F32 as R,G,B,A.
- ``setPixelData`` is not undoable on an existing layer, and a buffer that is too short is silently
  ignored (seen on 5.1.5: nothing written; it returns None there, a bool in the Qt 6 tree's API).
  So results always go into a NEW layer, its pixels are written BEFORE it is inserted, and the
  buffer length is checked here first.  Inserting (``addChildNode``) is one undo step.
- Krita 5.1 to 6.x: the calls made here have the same names and argument counts (the .sip check of
  tests/plugin/test_fake_krita_api.py); PyQt5's ``QByteArray`` takes bytes only (``pixel_bytes``).
- ``Node.bounds()`` can reach past the canvas: it is clamped.  Selection masks appear among a
  layer's children after ``setSelection``: masks are filtered out by ``type()``.
- Without a view (kritarunner, scripts) ``activeDocument``/``activeNode`` return None: the
  document can be given explicitly.
- Growing the canvas (expand): ``Document.resizeImage(-left, -top, w, h)`` moves every layer by the
  growth and is one undo step; the API has no undo macro, so the result layer is a second step.
- Provenance: Krita 5.1's API has no per-layer metadata, but a document can carry named
  annotations (``Document.setAnnotation``) that .kra files keep, and node UUIDs survive saving.
  So the records live in one JSON annotation of the document, keyed by the layer's UUID.
"""

from __future__ import annotations

from krita import Krita

from .. import host as H
from ..runtime.qt import QByteArray

ANNOTATION_TYPE = "diffusion-dock"
ANNOTATION_DESCRIPTION = "Diffusion Dock: how each result layer was made (mode, prompt, seed, model, parameters)"

LAYER_KINDS = {"paintlayer": "paint", "grouplayer": "group", "filelayer": "file", "filterlayer": "filter",
               "filllayer": "fill", "clonelayer": "clone", "vectorlayer": "vector"}


def pixel_bytes(data) -> QByteArray:
    """A QByteArray of a buffer's pixels.  (PyQt5 takes only bytes or bytearray: results from a local
    engine arrive as memory maps of shared-memory files, see core.link.bulk.)"""
    return QByteArray(data if isinstance(data, (bytes, bytearray)) else bytes(data))


def node_id(node) -> str:
    return node.uniqueId().toString()


def is_mask(node) -> bool:
    return node.type().endswith("mask")


def node_color(node) -> H.ColorInfo:
    return H.ColorInfo(node.colorModel(), node.colorDepth(), node.colorProfile())


class KritaDocument(H.HostDocument):
    def __init__(self, document):
        self.doc = document

    # -- what it is
    def _root(self):
        root = self.doc.rootNode()
        if root is None:
            raise H.DocumentClosed()
        return root

    @property
    def name(self) -> str:
        return self.doc.name() or self.doc.fileName() or "Untitled"

    @property
    def size(self) -> tuple[int, int]:
        self._root()
        return self.doc.width(), self.doc.height()

    @property
    def color(self) -> H.ColorInfo:
        return H.ColorInfo(self.doc.colorModel(), self.doc.colorDepth(), self.doc.colorProfile())

    @property
    def closed(self) -> bool:
        try:
            return self.doc.rootNode() is None
        except RuntimeError:   # the wrapper itself was deleted
            return True

    # -- layers
    def walk(self, parent, level, parent_id):
        for node in reversed(parent.childNodes()):   # Krita lists bottom to top
            if is_mask(node):
                continue
            yield node, level, parent_id
            if node.type() == "grouplayer":
                yield from self.walk(node, level + 1, node_id(node))

    def _canvas(self) -> H.Rect:
        w, h = self.size
        return H.Rect(0, 0, w, h)

    def _info(self, node, level=0, parent_id=None) -> H.LayerInfo:
        b = node.bounds()
        bounds = H.Rect(b.x(), b.y(), b.width(), b.height()).intersect(self._canvas())
        name = node.name()
        return H.LayerInfo(id=node_id(node), name=name, kind=LAYER_KINDS.get(node.type(), node.type()),
                           visible=node.visible(), locked=node.locked(), level=level, bounds=bounds,
                           color=node_color(node), parent_id=parent_id,
                           preview=name.startswith(H.PREVIEW_PREFIX) and node.locked())

    def _find(self, layer_id: str):
        for node, level, parent_id in self.walk(self._root(), 0, None):
            if node_id(node) == layer_id:
                return node, level, parent_id
        raise H.LayerNotFound(layer_id)

    def node(self, layer_id: str):
        """The Krita Node of a layer id."""
        return self._find(layer_id)[0]

    def layers(self) -> list[H.LayerInfo]:
        return [self._info(n, level, pid) for n, level, pid in self.walk(self._root(), 0, None)]

    def layer(self, layer_id: str) -> H.LayerInfo:
        return self._info(*self._find(layer_id))

    def activate_layer(self, layer_id: str) -> None:
        # Krita activates a layer inserted by a script, a moment later (seen on 5.1.5): the artist's
        # next stroke would go to the locked preview layer.
        node = self._find(layer_id)[0]
        active = self.doc.activeNode()
        if active is None or node_id(active) != layer_id:
            self.doc.setActiveNode(node)

    def active_layer(self) -> H.LayerInfo | None:
        node = self.doc.activeNode()
        if node is None:
            return None
        while node is not None and is_mask(node):
            node = node.parentNode()
        if node is None or node.type() not in LAYER_KINDS:
            return None
        try:
            return self.layer(node_id(node))
        except H.LayerNotFound:
            return None

    def read_pixels(self, layer_id: str, rect: H.Rect) -> H.ImageBuffer:
        self.check_rect(rect)
        node, level, parent_id = self._find(layer_id)
        info = self._info(node, level, parent_id)
        if not info.color.supported:
            raise H.UnsupportedColorModel(info.name, info.color)
        fmt = info.color.pixel_format
        # A paint layer's own pixels; other layers (groups, vector, file, fill) through their projection.
        read = node.pixelData if node.type() == "paintlayer" else node.projectionPixelData
        data = bytes(read(rect.x, rect.y, rect.w, rect.h))
        buf = H.ImageBuffer(rect.w, rect.h, fmt, data, info.color.linear)
        if len(data) != buf.expected_nbytes():
            raise H.HostError(f"Krita returned {len(data)} bytes for {rect.w}x{rect.h} {fmt} "
                              f"(expected {buf.expected_nbytes()})")
        return buf

    # -- selection
    def selection_bounds(self) -> H.Rect | None:
        self._root()
        sel = self.doc.selection()
        if sel is None:
            return None
        r = H.Rect(sel.x(), sel.y(), sel.width(), sel.height()).intersect(self._canvas())
        return None if r.empty else r

    def _selection_bytes(self, rect: H.Rect) -> bytes:
        return bytes(self.doc.selection().pixelData(rect.x, rect.y, rect.w, rect.h))

    # -- results
    def _new_layer_above(self, source_id: str, patch: H.Patch, name: str):
        source_node, level, parent_id = self._find(source_id)
        source = self._info(source_node, level, parent_id)
        if not source.color.supported:
            raise H.UnsupportedColorModel(source.name, source.color)
        self.check_patch(source, patch)
        node = self.doc.createNode(name, "paintlayer")
        if node is None:
            raise H.HostError("Krita could not create a layer")
        if node_color(node) != source.color:   # the layer has its own colour space, unlike the document
            node.setColorSpace(source.color.model, source.color.depth, source.color.profile)
        img = patch.image
        node.setPixelData(pixel_bytes(img.data), patch.x, patch.y, img.width, img.height)   # before inserting
        parent = source_node.parentNode() or self._root()
        if not parent.addChildNode(node, source_node):
            raise H.HostError("Krita refused to add the layer")
        return node, level, parent_id

    def add_result_layer(self, source_id: str, patch: H.Patch, name: str, provenance: dict) -> H.LayerInfo:
        source = self.layer(source_id)
        node, level, parent_id = self._new_layer_above(source_id, patch, name)
        records = self._records()
        records[node_id(node)] = H.provenance_record(provenance, source, patch)
        self.save_records(records)
        self.doc.refreshProjection()
        return self._info(node, level, parent_id)

    def add_expanded_layer(self, source_id: str, growth, patch: H.Patch, name: str, provenance: dict) -> H.LayerInfo:
        """``Document.resizeImage`` with a negative origin grows the canvas and moves every layer (and the
        selection) by the left and top growth (one undo step, "Resize Image"); then the result layer
        (a second step).  Krita 5's API has no undo macro to join them: the first Ctrl+Z removes the
        layer, the second restores the canvas."""
        source = self.layer(source_id)
        if not source.color.supported:
            raise H.UnsupportedColorModel(source.name, source.color)
        size = growth.canvas(self.size)
        self.check_canvas(size)
        self.check_patch(source, patch, size)
        self.doc.resizeImage(-growth.left, -growth.top, size[0], size[1])
        self.doc.waitForDone()
        if self.size != size:
            raise H.HostError(f"Krita did not grow the canvas to {size[0]}x{size[1]}")
        return self.add_result_layer(source_id, patch, name, provenance)

    def _records(self) -> dict[str, dict]:
        if ANNOTATION_TYPE not in self.doc.annotationTypes():
            return {}
        return H.decode_provenance_store(bytes(self.doc.annotation(ANNOTATION_TYPE)))

    def save_records(self, records: dict[str, dict]) -> None:
        self.doc.setAnnotation(ANNOTATION_TYPE, ANNOTATION_DESCRIPTION,
                               QByteArray(H.encode_provenance_store(records)))

    def provenance(self, layer_id: str) -> dict | None:
        self._find(layer_id)
        return self._records().get(layer_id)

    # Krita makes inserting and removing a layer undo steps (its pixels, name and lock are not), so a
    # preview costs as few steps as possible: one preview layer per source, whose pixels are replaced
    # while the artist browses results, and which Apply turns into the result layer itself.
    def _previews(self) -> list:
        return [n for n, _, _ in self.walk(self._root(), 0, None)
                if n.name().startswith(H.PREVIEW_PREFIX) and n.locked()]

    def _preview_above(self, source_id: str):
        """Our preview layer directly above the source layer (same parent), or None."""
        source_node = self._find(source_id)[0]
        parent = source_node.parentNode() or self._root()
        siblings = [n for n in parent.childNodes() if not is_mask(n)]        # bottom to top
        ids = [node_id(n) for n in siblings]
        i = ids.index(source_id)
        above = siblings[i + 1] if i + 1 < len(siblings) else None
        if above is not None and above.name().startswith(H.PREVIEW_PREFIX) and above.locked() \
                and above.type() == "paintlayer" and node_color(above) == node_color(source_node):
            return above
        return None

    def show_preview(self, source_id: str, patch: H.Patch, name: str = "") -> H.LayerInfo:
        title = H.PREVIEW_PREFIX + (name or "result")
        node = self._preview_above(source_id)
        if node is None:
            self.clear_preview()
            node, level, parent_id = self._new_layer_above(source_id, patch, title)
            node.setLocked(True)
            self.doc.refreshProjection()
            return self._info(node, level, parent_id)
        source = self.layer(source_id)
        self.check_patch(source, patch)
        for other in self._previews():
            if node_id(other) != node_id(node):
                other.remove()
        old = H.Rect(*node.bounds().getRect()).intersect(self._canvas())
        if not old.empty:
            bpp = H.ImageBuffer(1, 1, source.color.pixel_format, b"").expected_nbytes()
            node.setPixelData(QByteArray(bytes(old.w * old.h * bpp)), old.x, old.y, old.w, old.h)
        img = patch.image
        node.setPixelData(pixel_bytes(img.data), patch.x, patch.y, img.width, img.height)
        node.setName(title)
        self.doc.refreshProjection()
        return self.layer(node_id(node))

    def apply_preview(self, source_id: str, patch: H.Patch, name: str, provenance: dict) -> H.LayerInfo | None:
        node = self._preview_above(source_id)
        if node is None or node.name() != H.PREVIEW_PREFIX + name:
            return None
        source = self.layer(source_id)
        self.check_patch(source, patch)
        img = patch.image
        if memoryview(bytes(node.pixelData(patch.x, patch.y, img.width, img.height))) != memoryview(img.data):
            return None
        bounds = H.Rect(*node.bounds().getRect()).intersect(self._canvas())
        if not bounds.empty and bounds.intersect(H.Rect(patch.x, patch.y, img.width, img.height)) != bounds:
            return None                       # something else is on it: not exactly this result
        node.setLocked(False)
        node.setName(name)
        records = self._records()
        records[node_id(node)] = H.provenance_record(provenance, source, patch)
        self.save_records(records)
        self.doc.refreshProjection()
        return self.layer(node_id(node))

    def clear_preview(self) -> None:
        found = self._previews()
        for node in found:
            node.remove()
        if found:
            self.doc.refreshProjection()


class KritaHost(H.Host):
    """Krita as a host.  ``document`` pins one document (scripts, kritarunner, tests)."""

    def __init__(self, document=None):
        self._pinned = document

    @property
    def name(self) -> str:
        return f"Krita {Krita.instance().version()}"

    def active_document(self) -> KritaDocument | None:
        doc = self._pinned if self._pinned is not None else Krita.instance().activeDocument()
        if doc is None:
            return None
        wrapped = KritaDocument(doc)
        return None if wrapped.closed else wrapped

    def open_result_document(self, name: str, patch: H.Patch, layer_name: str, provenance: dict,
                             color: H.ColorInfo) -> KritaDocument:
        img = patch.image
        if not color.supported:
            raise H.UnsupportedColorModel("", color)
        if (img.format, bool(img.linear)) != (color.pixel_format, color.linear):
            raise H.HostError(f"the result is {img.format} but the document would be {color.describe()}")
        try:
            img.check("result")
        except ValueError as e:
            raise H.HostError(str(e)) from None
        app = Krita.instance()
        doc = app.createDocument(img.width, img.height, name, color.model, color.depth, color.profile, 300.0)
        if doc is None:
            raise H.HostError(f"Krita could not create a {img.width}x{img.height} document")
        root = doc.rootNode()
        defaults = [n for n in root.childNodes() if not is_mask(n)]
        node = doc.createNode(layer_name, "paintlayer")
        node.setPixelData(pixel_bytes(img.data), 0, 0, img.width, img.height)   # before inserting
        root.addChildNode(node, defaults[-1] if defaults else None)
        for n in defaults:                     # the empty background Krita makes: the result is the image
            n.remove()
        wrapped = KritaDocument(doc)
        record = {**provenance, "patch": {"x": 0, "y": 0, "width": img.width, "height": img.height,
                                          "format": img.format, "linear": img.linear},
                  "version": H.PROVENANCE_VERSION}
        wrapped.save_records({node_id(node): record})
        doc.refreshProjection()
        doc.waitForDone()
        window = app.activeWindow()
        if window is not None:
            window.addView(doc)
        return wrapped

    def open_converted_copy(self, document: H.HostDocument) -> KritaDocument:
        assert isinstance(document, KritaDocument)
        source = document.doc
        target = H.ColorInfo(source.colorModel(), source.colorDepth(), source.colorProfile()).converted()
        copy = source.clone()
        if copy is None:
            raise H.HostError("Krita could not copy the document")
        if not copy.setColorSpace(target.model, target.depth, target.profile):
            if not copy.setColorSpace(target.model, target.depth, ""):
                raise H.HostError(f"Krita could not convert the copy to {target.describe()}")
        copy.waitForDone()
        # Layers can have their own colour space, unlike the document's: convert those too.
        for node, _, _ in KritaDocument(copy).walk(copy.rootNode(), 0, None):
            color = node_color(node)
            if not color.supported:
                c = color.converted()
                node.setColorSpace(c.model, c.depth, c.profile)
        copy.setName(f"{document.name} (RGB copy)")
        copy.waitForDone()
        window = Krita.instance().activeWindow()
        if window is not None:
            window.addView(copy)
        return KritaDocument(copy)
