"""The host interface on the standalone editor.  Its layers are RGBA U8 (``Format_ARGB32``, B,G,R,A
in memory: the ``BGRA_U8`` layout) with an sRGB curve, so every layer is supported and nothing is
ever converted."""

from __future__ import annotations

from .. import host as H
from ..host.watch import SignalWatch
from .document import EditorDocument, Layer
from .pixels import LITTLE_ENDIAN, new_layer_image, read_rect, write_rect

EDITOR_COLOR = H.ColorInfo("RGBA", "U8", "sRGB")
HOST_NAME = "Diffusion Dock editor"


class EditorHostDocument(H.HostDocument):
    def __init__(self, doc: EditorDocument):
        if not LITTLE_ENDIAN:
            raise H.HostError("the standalone editor needs a little-endian machine (BGRA layout)")
        self.doc = doc

    @property
    def name(self) -> str:
        return self.doc.name

    @property
    def size(self) -> tuple[int, int]:
        self._alive()
        return self.doc.size

    @property
    def color(self) -> H.ColorInfo:
        return EDITOR_COLOR

    @property
    def closed(self) -> bool:
        return self.doc.closed

    def _alive(self) -> None:
        if self.doc.closed:
            raise H.DocumentClosed(self.doc.name)

    def _info(self, layer: Layer, preview: bool = False) -> H.LayerInfo:
        bounds = layer.content_bounds() or H.Rect(0, 0, 0, 0)
        return H.LayerInfo(id=layer.id, name=layer.name, kind="paint", visible=layer.visible,
                           locked=layer.locked, level=0, bounds=bounds, color=EDITOR_COLOR,
                           preview=preview)

    def _layer(self, layer_id: str) -> Layer:
        self._alive()
        try:
            return self.doc.layer(layer_id)
        except KeyError:
            raise H.LayerNotFound(layer_id) from None

    def layers(self) -> list[H.LayerInfo]:
        self._alive()
        preview = self.doc.preview.layer if self.doc.preview is not None else None
        return [self._info(layer, layer is preview) for layer in self.doc.stack()]

    def layer(self, layer_id: str) -> H.LayerInfo:
        return self._info(self._layer(layer_id))

    def active_layer(self) -> H.LayerInfo | None:
        self._alive()
        layer = self.doc.active_layer()
        return None if layer is None else self._info(layer)

    def read_pixels(self, layer_id: str, rect: H.Rect) -> H.ImageBuffer:
        self.check_rect(rect)
        layer = self._layer(layer_id)
        return H.ImageBuffer(rect.w, rect.h, "BGRA_U8", read_rect(layer.image, rect), False)

    def selection_bounds(self) -> H.Rect | None:
        self._alive()
        return self.doc.selection_bounds()

    def _selection_bytes(self, rect: H.Rect) -> bytes:
        return read_rect(self.doc.selection, rect)

    def add_result_layer(self, source_id: str, patch: H.Patch, name: str, provenance: dict) -> H.LayerInfo:
        source = self.layer(source_id)
        self.check_patch(source, patch)
        img = patch.image
        record = H.provenance_record(provenance, source, patch)
        layer = self.doc.add_layer_from_bytes(source_id, patch.x, patch.y, img.width, img.height, img.data,
                                              name, record)
        return self._info(layer)

    def add_expanded_layer(self, source_id: str, growth, patch: H.Patch, name: str, provenance: dict) -> H.LayerInfo:
        """The canvas grows and the result layer comes, as ONE undo step (a QUndoStack macro)."""
        source = self.layer(source_id)
        size = growth.canvas(self.size)
        self.check_canvas(size)
        self.check_patch(source, patch, size)
        img = patch.image
        record = H.provenance_record(provenance, source, patch)
        layer = self.doc.expand_with_layer(growth.as_tuple(), source_id, patch.x, patch.y, img.width, img.height,
                                           img.data, name, record)
        return self._info(layer)

    def provenance(self, layer_id: str) -> dict | None:
        return self._layer(layer_id).provenance

    def show_preview(self, source_id: str, patch: H.Patch, name: str = "") -> H.LayerInfo:
        source = self.layer(source_id)
        self.check_patch(source, patch)
        img = patch.image
        layer = self.doc.show_preview(source_id, patch.x, patch.y, img.width, img.height, img.data,
                                      H.PREVIEW_PREFIX + (name or "result"))
        return self._info(layer, preview=True)

    def clear_preview(self) -> None:
        self._alive()
        self.doc.clear_preview()

    def change_token(self, layer_id: str, rect: H.Rect) -> object:
        # A QImage's cache key changes whenever its pixels are written; a new selection is a new image.
        layer = self._layer(layer_id)
        selection = self.doc.selection
        return rect.as_tuple(), layer.image.cacheKey(), None if selection is None else selection.cacheKey()


class EditorHost(H.Host):
    """The standalone editor window as a host.  ``window.document`` is the open document."""

    def __init__(self, window):
        self.window = window

    @property
    def name(self) -> str:
        return HOST_NAME

    def active_document(self) -> EditorHostDocument | None:
        doc = getattr(self.window, "document", None)
        return None if doc is None or doc.closed else EditorHostDocument(doc)

    def watch(self, on_change):
        """The document's own signals: every change of pixels, selection, layers or the active layer."""
        doc = self.window.document
        return SignalWatch(on_change, (doc.pixels_changed, doc.selection_changed, doc.layers_changed,
                                       doc.active_changed))

    def open_result_document(self, name: str, patch: H.Patch, layer_name: str, provenance: dict,
                             color: H.ColorInfo) -> EditorHostDocument:
        img = patch.image
        if img.format != "BGRA_U8" or img.linear:
            raise H.HostError(f"the standalone editor keeps 8-bit sRGB layers; this result is {img.format}")
        try:
            img.check("result")
        except ValueError as e:
            raise H.HostError(str(e)) from None
        doc = EditorDocument(img.width, img.height, name)
        record = {**provenance, "patch": {"x": 0, "y": 0, "width": img.width, "height": img.height,
                                          "format": img.format, "linear": img.linear},
                  "version": H.PROVENANCE_VERSION}
        image = new_layer_image(img.width, img.height)
        write_rect(image, 0, 0, img.width, img.height, img.data)
        doc.insert_layer(Layer(layer_name, image, provenance=record), 0)
        doc.undo_stack.clear()
        window = self.window.open_in_new_window(doc)
        return EditorHostDocument(window.document)

    def open_converted_copy(self, document: H.HostDocument) -> H.HostDocument:
        # Every layer of the editor is RGBA U8 already: there is nothing to convert.
        return document
