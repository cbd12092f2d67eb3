"""A host over plain bytes, for testing the dock where Krita is absent: layers in any of Krita's RGBA
layouts (U8/U16 as B,G,R,A; F16/F32 as R,G,B,A, linear or not) and non-RGB ones (refused), a soft
selection, result layers with one-step undo, previews, provenance.  It stands in for Krita's API (the
boundary the dock talks to); the real Krita host is tested in real Krita."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import numpy as np

from plugin.diffusion_dock import host as H

DTYPES = {"U8": np.dtype("<u1"), "U16": np.dtype("<u2"), "F16": np.dtype("<f2"), "F32": np.dtype("<f4")}


@dataclass(eq=False)
class MemLayer:
    name: str
    color: H.ColorInfo
    pixels: np.ndarray            # h × w × 4 in the layer's own layout and dtype (canvas-sized)
    provenance: dict | None = None
    locked: bool = False
    preview: bool = False
    id: str = field(default_factory=lambda: uuid.uuid4().hex)


class MemoryDocument(H.HostDocument):
    def __init__(self, width: int, height: int, name: str = "mem"):
        self._name, self.width, self.height = name, width, height
        self.stack: list[MemLayer] = []          # top first
        self.selection: np.ndarray | None = None  # h × w uint8
        self.active_id: str | None = None
        self.undo: list[tuple] = []
        self.is_closed = False
        self.converted_from = None

    # -- building (tests)
    def add(self, name: str, arr: np.ndarray, color: H.ColorInfo) -> MemLayer:
        layer = MemLayer(name, color, np.ascontiguousarray(arr))
        self.stack.append(layer)
        self.active_id = self.active_id or layer.id
        return layer

    def select(self, mask: np.ndarray | None) -> None:
        self.selection = None if mask is None or not mask.any() else np.ascontiguousarray(mask, np.uint8)

    def undo_last(self) -> None:
        """Krita's Ctrl+Z: removes the last added layer, or restores the size and pixels a resize changed."""
        kind, what = self.undo.pop()
        if kind == "add":
            self.stack.remove(what)
        else:
            assert kind == "resize"
            (self.width, self.height), pixels, self.selection = what
            for layer in self.stack:
                layer.pixels = pixels[layer.id]

    # -- HostDocument
    @property
    def name(self) -> str:
        return self._name

    @property
    def size(self):
        return self.width, self.height

    @property
    def color(self) -> H.ColorInfo:
        return self.stack[-1].color if self.stack else H.ColorInfo("RGBA", "U8", "sRGB")

    @property
    def closed(self) -> bool:
        return self.is_closed

    def _info(self, layer: MemLayer) -> H.LayerInfo:
        alpha = layer.pixels[..., 3] != 0
        ys, xs = np.nonzero(alpha)
        bounds = H.Rect(0, 0, 0, 0) if len(xs) == 0 else \
            H.Rect(int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))
        return H.LayerInfo(layer.id, layer.name, "paint", True, layer.locked, 0, bounds, layer.color,
                           preview=layer.preview)

    def _find(self, layer_id: str) -> MemLayer:
        for layer in self.stack:
            if layer.id == layer_id:
                return layer
        raise H.LayerNotFound(layer_id)

    def layers(self):
        return [self._info(la) for la in self.stack]

    def layer(self, layer_id):
        return self._info(self._find(layer_id))

    def active_layer(self):
        return self.layer(self.active_id) if self.active_id else None

    def activate_layer(self, layer_id):
        self._find(layer_id)
        self.active_id = layer_id

    def read_pixels(self, layer_id, rect):
        self.check_rect(rect)
        layer = self._find(layer_id)
        if not layer.color.supported:
            raise H.UnsupportedColorModel(layer.name, layer.color)
        out = np.zeros((rect.h, rect.w, 4), layer.pixels.dtype)
        inside = rect.intersect(H.Rect(0, 0, self.width, self.height))
        if not inside.empty:
            out[inside.y - rect.y:inside.bottom - rect.y, inside.x - rect.x:inside.right - rect.x] = \
                layer.pixels[inside.y:inside.bottom, inside.x:inside.right]
        return H.ImageBuffer(rect.w, rect.h, layer.color.pixel_format, out.tobytes(), layer.color.linear)

    def selection_bounds(self):
        if self.selection is None:
            return None
        ys, xs = np.nonzero(self.selection)
        return H.Rect(int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))

    def _selection_bytes(self, rect):
        out = np.zeros((rect.h, rect.w), np.uint8)
        inside = rect.intersect(H.Rect(0, 0, self.width, self.height))
        out[inside.y - rect.y:inside.bottom - rect.y, inside.x - rect.x:inside.right - rect.x] = \
            self.selection[inside.y:inside.bottom, inside.x:inside.right]
        return out.tobytes()

    def _layer_from_patch(self, source: H.LayerInfo, patch: H.Patch, name: str) -> MemLayer:
        self.check_patch(source, patch)
        dtype = DTYPES[source.color.depth]
        arr = np.zeros((self.height, self.width, 4), dtype)
        img = patch.image
        arr[patch.y:patch.y + img.height, patch.x:patch.x + img.width] = \
            np.frombuffer(img.data, dtype).reshape(img.height, img.width, 4)
        return MemLayer(name, source.color, arr)

    def add_result_layer(self, source_id, patch, name, provenance):
        source = self.require_supported(source_id)
        layer = self._layer_from_patch(source, patch, name)
        layer.provenance = H.provenance_record(provenance, source, patch)
        self.stack.insert(self.stack.index(self._find(source_id)), layer)
        self.undo.append(("add", layer))
        return self._info(layer)

    def add_expanded_layer(self, source_id, growth, patch, name, provenance):
        """As Krita 5 does it (no undo macro there): the canvas resize is one undo step, the new layer
        another."""
        source = self.require_supported(source_id)
        size = growth.canvas(self.size)
        self.check_canvas(size)
        self.check_patch(source, patch, size)
        self.undo.append(("resize", ((self.width, self.height), {la.id: la.pixels for la in self.stack},
                                     self.selection)))
        left, top = growth.offset
        w, h = self.width, self.height
        for layer in self.stack:
            grown = np.zeros((size[1], size[0], 4), layer.pixels.dtype)
            grown[top:top + h, left:left + w] = layer.pixels
            layer.pixels = grown
        if self.selection is not None:
            sel = np.zeros((size[1], size[0]), np.uint8)
            sel[top:top + h, left:left + w] = self.selection
            self.selection = sel
        self.width, self.height = size
        return self.add_result_layer(source_id, patch, name, provenance)

    def provenance(self, layer_id):
        return self._find(layer_id).provenance

    def show_preview(self, source_id, patch, name=""):
        self.clear_preview()
        source = self.require_supported(source_id)
        layer = self._layer_from_patch(source, patch, H.PREVIEW_PREFIX + (name or "result"))
        layer.locked = layer.preview = True
        self.stack.insert(self.stack.index(self._find(source_id)), layer)
        return self._info(layer)

    def clear_preview(self):
        self.stack = [la for la in self.stack if not la.preview]


class MemoryHost(H.Host):
    def __init__(self, doc: MemoryDocument | None = None):
        self.documents = [doc] if doc is not None else []
        self.active = doc
        self.opened: list[MemoryDocument] = []

    @property
    def name(self) -> str:
        return "memory host"

    def active_document(self):
        return self.active

    def open_converted_copy(self, document):
        copy = MemoryDocument(document.width, document.height, f"{document.name} (RGB copy)")
        for layer in document.stack:
            c = layer.color.converted()
            copy.add(layer.name, np.zeros((document.height, document.width, 4), DTYPES[c.depth]), c)
        copy.converted_from = document
        self.documents.append(copy)
        self.active = copy
        return copy

    def open_result_document(self, name, patch, layer_name, provenance, color):
        img = patch.image
        doc = MemoryDocument(img.width, img.height, name)
        arr = np.frombuffer(img.data, DTYPES[color.depth]).reshape(img.height, img.width, 4).copy()
        layer = doc.add(layer_name, arr, color)
        layer.provenance = provenance
        self.opened.append(doc)
        self.documents.append(doc)
        return doc
