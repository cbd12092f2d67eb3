"""The standalone editor's document: a stack of canvas-sized RGBA layers, a soft selection, an
optional preview, and a QUndoStack through which every change to layers or selection goes.

Layers are listed top to bottom (index 0 is the top), like the layer panel shows them.  A layer's
pixels are a ``Format_ARGB32`` QImage the size of the canvas (BGRA U8 in memory).  The preview
(``show_preview``) is not a layer of the stack and never enters the undo history: it is drawn
directly above its source layer until it is cleared.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from ..runtime.coreapi import geometry
from ..runtime.qt import QObject, QRect, QtGui, QUndoCommand, QUndoStack, Signal
from . import pixels
from .selection import Combine, combine, invert

Rect = geometry.Rect


@dataclass(eq=False)
class Layer:
    name: str
    image: QtGui.QImage
    visible: bool = True
    opacity: float = 1.0
    locked: bool = False
    provenance: dict | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))

    _bounds_cache: tuple = field(default=(None, None), init=False, repr=False, compare=False)

    def content_bounds(self) -> Rect | None:
        """Bounds of the non-transparent pixels (cached until the image changes)."""
        key = self.image.cacheKey()
        if self._bounds_cache[0] != key:
            self._bounds_cache = (key, pixels.nonzero_bounds(self.image, channel=pixels.alpha_channel()))
        return self._bounds_cache[1]


@dataclass(eq=False)
class Preview:
    source_id: str
    layer: Layer


class EditorDocument(QObject):
    layers_changed = Signal()               # structure, names, visibility, order
    pixels_changed = Signal(QRect)          # canvas area whose composite changed
    selection_changed = Signal()
    active_changed = Signal(str)            # id of the new active layer ("" for none)

    def __init__(self, width: int, height: int, name: str = "Untitled", parent=None):
        super().__init__(parent)
        if not (1 <= width <= 16384 and 1 <= height <= 16384):
            raise ValueError(f"canvas must be 1–16384 px on each side, got {width}x{height}")
        self.width, self.height = width, height
        self.name = name
        self.path: str | None = None
        self.layers: list[Layer] = []
        self.selection: QtGui.QImage | None = None
        self.preview: Preview | None = None
        self.active_id: str | None = None
        self.closed = False
        self.undo_stack = QUndoStack(self)

    @classmethod
    def new(cls, width: int, height: int, name: str = "Untitled", background: QtGui.QColor | None = None
            ) -> EditorDocument:
        """A document with one layer ("Background", white unless ``background`` says otherwise)."""
        doc = cls(width, height, name)
        img = pixels.new_layer_image(width, height)
        img.fill(background if background is not None else QtGui.QColor(255, 255, 255, 255))
        doc.insert_layer(Layer("Background", img), 0)
        doc.undo_stack.clear()
        return doc

    # -- queries
    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    @property
    def canvas_rect(self) -> QRect:
        return QRect(0, 0, self.width, self.height)

    def index_of(self, layer_id: str) -> int:
        for i, layer in enumerate(self.layers):
            if layer.id == layer_id:
                return i
        raise KeyError(layer_id)

    def layer(self, layer_id: str) -> Layer:
        return self.layers[self.index_of(layer_id)]

    def active_layer(self) -> Layer | None:
        if self.active_id is not None:
            for layer in self.layers:
                if layer.id == self.active_id:
                    return layer
        return self.layers[0] if self.layers else None

    def set_active(self, layer_id: str | None) -> None:
        if layer_id != self.active_id:
            self.active_id = layer_id
            self.active_changed.emit(layer_id or "")

    @property
    def modified(self) -> bool:
        return not self.undo_stack.isClean()

    # -- raw changes (what the undo commands do and undo; not undoable themselves)
    def place_layer(self, layer: Layer, index: int) -> None:
        self.layers.insert(index, layer)
        self.layers_changed.emit()
        self.pixels_changed.emit(self.canvas_rect)

    def take_layer(self, layer: Layer) -> int:
        index = self.layers.index(layer)
        del self.layers[index]
        if self.active_id == layer.id:
            self.set_active(self.layers[min(index, len(self.layers) - 1)].id if self.layers else None)
        if self.preview is not None and self.preview.source_id == layer.id:
            self.clear_preview()
        self.layers_changed.emit()
        self.pixels_changed.emit(self.canvas_rect)
        return index

    def put_selection(self, mask: QtGui.QImage | None) -> None:
        self.selection = mask
        self.selection_changed.emit()

    # -- undoable operations
    def insert_layer(self, layer: Layer, index: int, text: str = "Add layer") -> Layer:
        self.undo_stack.push(_InsertLayer(self, layer, index, text))
        self.set_active(layer.id)
        return layer

    def add_layer(self, name: str | None = None) -> Layer:
        """A new empty layer above the active one."""
        active = self.active_layer()
        index = self.layers.index(active) if active is not None else 0
        name = name or self._unique_name("Layer")
        return self.insert_layer(Layer(name, pixels.new_layer_image(self.width, self.height)), index)

    def remove_layer(self, layer_id: str) -> None:
        self.undo_stack.push(_RemoveLayer(self, self.layer(layer_id)))

    def move_layer(self, layer_id: str, new_index: int) -> None:
        layer = self.layer(layer_id)
        new_index = max(0, min(len(self.layers) - 1, new_index))
        if new_index != self.layers.index(layer):
            self.undo_stack.push(_MoveLayer(self, layer, new_index))

    def raise_layer(self, layer_id: str) -> None:
        self.move_layer(layer_id, self.index_of(layer_id) - 1)

    def lower_layer(self, layer_id: str) -> None:
        self.move_layer(layer_id, self.index_of(layer_id) + 1)

    def set_visible(self, layer_id: str, visible: bool) -> None:
        layer = self.layer(layer_id)
        if layer.visible != visible:
            self.undo_stack.push(_SetAttr(self, layer, "visible", visible,
                                          "Show layer" if visible else "Hide layer"))

    def rename_layer(self, layer_id: str, name: str) -> None:
        layer = self.layer(layer_id)
        if name and layer.name != name:
            self.undo_stack.push(_SetAttr(self, layer, "name", name, "Rename layer"))

    def add_layer_from_bytes(self, above_id: str, x: int, y: int, width: int, height: int, data: bytes,
                             name: str, provenance: dict | None = None) -> Layer:
        """A NEW layer directly above ``above_id`` holding BGRA U8 ``data`` at (x, y): one undo step."""
        index = self.index_of(above_id)
        img = pixels.new_layer_image(self.width, self.height)
        pixels.write_rect(img, x, y, width, height, data)
        return self.insert_layer(Layer(name, img, provenance=provenance), index, f"Add {name}")

    def resize_canvas(self, left: int, top: int, right: int, bottom: int, text: str = "Resize canvas") -> None:
        """Grow the canvas by px on each side (negative values crop): every layer and the selection keep
        their pixels byte for byte, shifted by (left, top).  One undo step; the preview goes."""
        w, h = self.width + left + right, self.height + top + bottom
        if not (1 <= w <= 16384 and 1 <= h <= 16384):
            raise ValueError(f"canvas must be 1–16384 px on each side, got {w}x{h}")
        self.undo_stack.push(_ResizeCanvas(self, left, top, (w, h), text))

    def expand_with_layer(self, growth: tuple[int, int, int, int], above_id: str, x: int, y: int, width: int,
                          height: int, data: bytes, name: str, provenance: dict | None = None) -> Layer:
        """Grow the canvas by ``growth`` (left, top, right, bottom) and add a NEW layer above ``above_id``
        holding BGRA U8 ``data`` at (x, y) of the grown canvas: ONE undo step (a macro) undoes both."""
        self.index_of(above_id)
        self.undo_stack.beginMacro(f"Expand canvas: {name}")
        try:
            self.resize_canvas(*growth, text="Expand canvas")
            layer = self.add_layer_from_bytes(above_id, x, y, width, height, data, name, provenance)
        except BaseException:
            self.undo_stack.endMacro()
            self.undo_stack.undo()          # nothing half done stays
            raise
        self.undo_stack.endMacro()
        return layer

    def set_selection(self, mask: QtGui.QImage | None, text: str = "Select") -> None:
        """Replace the selection (None = deselect) as one undo step; an all-zero mask is None."""
        if mask is not None and pixels.nonzero_bounds(mask) is None:
            mask = None
        if mask is None and self.selection is None:
            return
        self.undo_stack.push(_SetSelection(self, mask, text))

    def apply_selection(self, shape: QtGui.QImage, how: Combine, text: str = "Select") -> None:
        self.set_selection(combine(self.selection, shape, how), text)

    def select_all(self) -> None:
        self.set_selection(invert(None, self.size), "Select all")

    def deselect(self) -> None:
        self.set_selection(None, "Deselect")

    def invert_selection(self) -> None:
        self.set_selection(invert(self.selection, self.size), "Invert selection")

    def selection_bounds(self) -> Rect | None:
        return None if self.selection is None else pixels.nonzero_bounds(self.selection)

    # -- preview (outside the undo history)
    def show_preview(self, source_id: str, x: int, y: int, width: int, height: int, data: bytes,
                     name: str) -> Layer:
        self.index_of(source_id)
        img = pixels.new_layer_image(self.width, self.height)
        pixels.write_rect(img, x, y, width, height, data)
        self.preview = Preview(source_id, Layer(name, img, locked=True))
        self.layers_changed.emit()
        self.pixels_changed.emit(self.canvas_rect)
        return self.preview.layer

    def clear_preview(self) -> None:
        if self.preview is not None:
            self.preview = None
            self.layers_changed.emit()
            self.pixels_changed.emit(self.canvas_rect)

    def stack(self, with_preview: bool = True) -> list[Layer]:
        """Layers top to bottom as drawn, the preview (if any) directly above its source."""
        out: list[Layer] = []
        for layer in self.layers:
            if with_preview and self.preview is not None and self.preview.source_id == layer.id:
                out.append(self.preview.layer)
            out.append(layer)
        return out

    # -- rendering
    def composite(self, rect: QRect | None = None, with_preview: bool = True,
                  background: QtGui.QColor | None = None) -> QtGui.QImage:
        """The visible layers flattened (premultiplied ARGB32), for display and flat exports."""
        rect = rect or self.canvas_rect
        out = QtGui.QImage(rect.width(), rect.height(), QtGui.QImage.Format.Format_ARGB32_Premultiplied)
        out.fill(background if background is not None else QtGui.QColor(0, 0, 0, 0))
        p = QtGui.QPainter(out)
        for layer in reversed(self.stack(with_preview)):
            if layer.visible and layer.opacity > 0:
                p.setOpacity(layer.opacity)
                p.drawImage(0, 0, layer.image, rect.x(), rect.y(), rect.width(), rect.height())
        p.end()
        return out

    def _unique_name(self, base: str) -> str:
        names = {layer.name for layer in self.layers}
        n = len(self.layers) + 1
        while f"{base} {n}" in names:
            n += 1
        return f"{base} {n}"


class _InsertLayer(QUndoCommand):
    def __init__(self, doc, layer, index, text):
        super().__init__(text)
        self.doc, self.layer, self.index = doc, layer, index

    def redo(self):
        self.doc.place_layer(self.layer, self.index)

    def undo(self):
        self.doc.take_layer(self.layer)


class _RemoveLayer(QUndoCommand):
    def __init__(self, doc, layer):
        super().__init__(f"Delete {layer.name}")
        self.doc, self.layer, self.index = doc, layer, doc.layers.index(layer)

    def redo(self):
        self.index = self.doc.take_layer(self.layer)

    def undo(self):
        self.doc.place_layer(self.layer, self.index)
        self.doc.set_active(self.layer.id)


class _MoveLayer(QUndoCommand):
    def __init__(self, doc, layer, new_index):
        super().__init__(f"Move {layer.name}")
        self.doc, self.layer, self.new, self.old = doc, layer, new_index, doc.layers.index(layer)

    def _move(self, index):
        self.doc.layers.remove(self.layer)
        self.doc.layers.insert(index, self.layer)
        self.doc.layers_changed.emit()
        self.doc.pixels_changed.emit(self.doc.canvas_rect)

    def redo(self):
        self._move(self.new)

    def undo(self):
        self._move(self.old)


class _SetAttr(QUndoCommand):
    def __init__(self, doc, layer, attr, value, text):
        super().__init__(text)
        self.doc, self.layer, self.attr, self.new, self.old = doc, layer, attr, value, getattr(layer, attr)

    def _set(self, value):
        setattr(self.layer, self.attr, value)
        self.doc.layers_changed.emit()
        if self.attr in ("visible", "opacity"):
            self.doc.pixels_changed.emit(self.doc.canvas_rect)

    def redo(self):
        self._set(self.new)

    def undo(self):
        self._set(self.old)


class _ResizeCanvas(QUndoCommand):
    """The canvas's size, every layer's image and the selection, swapped as a whole (the images of both
    sizes are kept, so undo and redo are exact)."""

    def __init__(self, doc, left, top, size, text):
        super().__init__(text)
        self.doc, self.offset = doc, (left, top)
        self.sizes = (doc.size, size)
        self.images: dict | None = None           # layer → (old image, new image), made on the first redo
        self.selections = (doc.selection, None)

    def _moved(self, image, make):
        (ow, oh), (nw, nh) = self.sizes
        out = make(nw, nh)
        data = pixels.read_rect(image, Rect(-self.offset[0], -self.offset[1], nw, nh))
        pixels.write_rect(out, 0, 0, nw, nh, data)
        return out

    def _apply(self, new: bool) -> None:
        doc = self.doc
        doc.clear_preview()
        doc.width, doc.height = self.sizes[1 if new else 0]
        for layer, images in (self.images or {}).items():
            layer.image = images[1 if new else 0]
        doc.put_selection(self.selections[1 if new else 0])
        doc.layers_changed.emit()
        doc.pixels_changed.emit(doc.canvas_rect)

    def redo(self):
        if self.images is None:
            self.images = {layer: (layer.image, self._moved(layer.image, pixels.new_layer_image))
                           for layer in self.doc.layers}
            old = self.selections[0]
            self.selections = (old, None if old is None else self._moved(old, pixels.new_mask))
        self._apply(True)

    def undo(self):
        self._apply(False)


class _SetSelection(QUndoCommand):
    def __init__(self, doc, mask, text):
        super().__init__(text)
        self.doc, self.new, self.old = doc, mask, doc.selection

    def redo(self):
        self.doc.put_selection(self.new)

    def undo(self):
        self.doc.put_selection(self.old)
