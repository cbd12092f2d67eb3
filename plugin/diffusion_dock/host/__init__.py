"""What the dock needs from an image editor: the host interface, implemented by the Krita adapter
(``krita_host``) and by the standalone editor (``editor.host``).

The plugin side does no pixel math: pixels are read and written in the editor's own layout and
passed through as bytes (``core.contract.jobs.ImageBuffer``); conversions happen in the engine process.
Layers are named by string ids that stay valid while the layer exists (Krita: the node's UUID).
Standard library only (plus the engine's pure modules through ``coreapi``).

The layouts, per colour depth of an RGBA layer (little-endian, as Krita stores them):

=====  ============  ===================================================
depth  format        bytes per pixel
=====  ============  ===================================================
U8     BGRA_U8       4: B, G, R, A
U16    BGRA_U16      8: B, G, R, A (uint16)
F16    RGBA_F16      8: R, G, B, A (half float)
F32    RGBA_F32      16: R, G, B, A (float); usually linear light
=====  ============  ===================================================
"""

from __future__ import annotations

import json
import re
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from ..runtime.coreapi import core, geometry, jobs

Rect = geometry.Rect
ImageBuffer = jobs.ImageBuffer
Patch = jobs.Patch

DEPTH_FORMATS = {"U8": "BGRA_U8", "U16": "BGRA_U16", "F16": "RGBA_F16", "F32": "RGBA_F32"}
SUPPORTED_MODEL = "RGBA"
MODEL_NAMES = {"RGBA": "RGB", "CMYKA": "CMYK", "LABA": "L*a*b*", "GRAYA": "grayscale", "XYZA": "XYZ",
               "YCbCrA": "YCbCr", "A": "alpha"}
DEPTH_NAMES = {"U8": "8-bit integer", "U16": "16-bit integer", "F16": "16-bit float", "F32": "32-bit float"}
FORMAT_DEPTHS = {fmt: depth for depth, fmt in DEPTH_FORMATS.items()}
# Krita's own sRGB profiles: linear light (g10) and the sRGB curve; a conversion to RGBA uses Krita's
# defaults, the curve for integer depths and linear light for float depths.
LINEAR_PROFILE, SRGB_PROFILE = "sRGB-elle-V2-g10.icc", "sRGB-elle-V2-srgbtrc.icc"
DEFAULT_PROFILES = {"U8": SRGB_PROFILE, "U16": SRGB_PROFILE, "F16": LINEAR_PROFILE, "F32": LINEAR_PROFILE}
PREVIEW_PREFIX = "[Preview] "
PROVENANCE_VERSION = 1

_LINEAR = re.compile(r"(?<![a-z0-9])g10(?![0-9])|linear|scrgb|gamma\s*1(\.0+)?(?![0-9.])")


def is_linear_profile(profile: str) -> bool:
    """Whether an ICC profile name describes linear light (a gamma 1.0 tone curve).

    Krita's own profiles say it in their names: ``sRGB-elle-V2-g10.icc`` (linear) versus
    ``sRGB-elle-V2-srgbtrc.icc``, ``-g22``, ``-labl``, ``-rec709`` (not linear).
    """
    return bool(_LINEAR.search((profile or "").lower()))


@dataclass(frozen=True)
class ColorInfo:
    """A layer's (or document's) colour space as the editor names it."""

    model: str      # RGBA, CMYKA, LABA, GRAYA, XYZA, YCbCrA, A
    depth: str      # U8, U16, F16, F32
    profile: str = ""

    @property
    def linear(self) -> bool:
        return is_linear_profile(self.profile)

    @property
    def supported(self) -> bool:
        return self.model == SUPPORTED_MODEL and self.depth in DEPTH_FORMATS

    @property
    def pixel_format(self) -> str:
        """The ImageBuffer format of this colour space's pixels; raises UnsupportedColorModel."""
        if not self.supported:
            raise UnsupportedColorModel("", self)
        return DEPTH_FORMATS[self.depth]

    def describe(self, profile: bool = True) -> str:
        text = f"{MODEL_NAMES.get(self.model, self.model)} {DEPTH_NAMES.get(self.depth, self.depth)}"
        if profile and self.profile:
            text += f" ({self.profile}{', linear light' if self.linear else ''})"
        return text

    def converted(self) -> ColorInfo:
        """The supported colour space a copy of this one is converted to (same depth when possible)."""
        depth = self.depth if self.depth in DEPTH_FORMATS else "U8"
        if self.model == SUPPORTED_MODEL and self.depth == depth:
            return self
        return ColorInfo(SUPPORTED_MODEL, depth, DEFAULT_PROFILES[depth])


@dataclass(frozen=True)
class LayerInfo:
    id: str
    name: str
    kind: str           # paint, group, vector, file, filter, fill, clone
    visible: bool
    locked: bool
    level: int          # 0 = top level, 1 = inside one group, ...
    bounds: Rect        # the layer's content, clamped to the canvas (may be empty)
    color: ColorInfo
    parent_id: str | None = None
    preview: bool = False   # a temporary preview layer of the dock


# ---------------------------------------------------------------------------------------------- errors

class HostError(Exception):
    """An editor operation could not be done.  ``str(e)`` is one readable line for the artist."""

    code = "host_error"


class NoDocument(HostError):
    code = "no_document"

    def __init__(self, message: str = "Open or create a document first."):
        super().__init__(message)


class DocumentClosed(HostError):
    code = "document_closed"

    def __init__(self, name: str = ""):
        super().__init__(f"The document {name!r} was closed." if name else "The document was closed.")


class LayerNotFound(HostError):
    code = "layer_not_found"

    def __init__(self, layer_id: str):
        super().__init__("That layer no longer exists (it was deleted or undone).")
        self.layer_id = layer_id


class UnsupportedColorModel(HostError):
    """The layer is not RGBA.  The dock offers ``Host.open_converted_copy``; nothing is touched."""

    code = "unsupported_color_model"
    can_convert = True

    def __init__(self, layer_name: str, color: ColorInfo):
        self.layer_name = layer_name
        self.color = color
        what = f'The layer "{layer_name}"' if layer_name else "This layer"
        super().__init__(
            f"{what} is {color.describe()}. Diffusion Dock works on RGB layers only: it can work on a "
            f"copy of the document converted to {color.converted().describe(profile=False)}, and leave "
            f"this document untouched.")


# ---------------------------------------------------------------------------------------------- provenance

def provenance_record(provenance: dict, source: LayerInfo, patch: Patch) -> dict:
    """What a result layer records about itself: the job's provenance plus where it came from.

    ``provenance`` is ``JobResult.provenance(i)`` (mode, model, seed, params, options), enough
    to re-run the job on the same source layer and region.
    """
    return {
        **provenance,
        "source_layer": {"id": source.id, "name": source.name},
        "patch": {"x": patch.x, "y": patch.y, "width": patch.image.width, "height": patch.image.height,
                  "format": patch.image.format, "linear": patch.image.linear},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "app": f"diffusion-dock {getattr(core, '__version__', '?')}",
        "version": PROVENANCE_VERSION,
    }


def encode_provenance_store(records: dict[str, dict]) -> bytes:
    """Document-level store: ``{"version": 1, "layers": {layer id: record}}`` as UTF-8 JSON."""
    return json.dumps({"version": PROVENANCE_VERSION, "layers": records}, ensure_ascii=False,
                      sort_keys=True).encode("utf-8")


def decode_provenance_store(data: bytes | None) -> dict[str, dict]:
    """Inverse of ``encode_provenance_store``; unreadable or foreign data gives an empty store."""
    if not data:
        return {}
    try:
        doc = json.loads(bytes(data).decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return {}
    layers = doc.get("layers") if isinstance(doc, dict) else None
    if not isinstance(layers, dict):
        return {}
    return {str(k): v for k, v in layers.items() if isinstance(v, dict)}


def result_layer_name(provenance: dict) -> str:
    """``[Inpaint] red scarf (seed 1234)`` from a provenance record."""
    params = provenance.get("params") or {}
    return jobs.result_name(provenance.get("mode", ""), params.get("prompt", ""), provenance.get("seed"),
                            provenance.get("model"))


# ---------------------------------------------------------------------------------------------- interface

class HostDocument(ABC):
    """One open document of the editor.  A job keeps the document it started on and writes its
    results there, even if the artist switched to another document meanwhile."""

    # -- what it is
    @property
    @abstractmethod
    def name(self) -> str: ...

    @property
    @abstractmethod
    def size(self) -> tuple[int, int]:
        """Canvas (width, height) in pixels."""

    @property
    @abstractmethod
    def color(self) -> ColorInfo:
        """The document's colour space (layers may differ; check the layer's)."""

    @property
    @abstractmethod
    def closed(self) -> bool: ...

    # -- layers
    @abstractmethod
    def layers(self) -> list[LayerInfo]:
        """All layers top to bottom as the layer panel shows them (a group before its children);
        masks are not layers."""

    @abstractmethod
    def layer(self, layer_id: str) -> LayerInfo:
        """Raises LayerNotFound."""

    @abstractmethod
    def active_layer(self) -> LayerInfo | None: ...

    def activate_layer(self, layer_id: str) -> None:
        """Make ``layer_id`` the active layer (Live keeps the artist on the source layer when the editor
        activates the preview layer it inserted).  Raises LayerNotFound.  This default does nothing: an
        editor that never activates a preview layer needs nothing."""
        self.layer(layer_id)

    @abstractmethod
    def read_pixels(self, layer_id: str, rect: Rect) -> ImageBuffer:
        """The layer's pixels over ``rect`` (canvas coordinates; transparent zeros where it has
        none) in the layer's own layout, ``linear`` set from its profile.  Raises
        UnsupportedColorModel for non-RGBA layers."""

    # -- selection
    @abstractmethod
    def selection_bounds(self) -> Rect | None:
        """Bounds of the selection clamped to the canvas, None when nothing is selected."""

    def read_selection(self, rect: Rect | None = None) -> ImageBuffer | None:
        """The (soft) selection over ``rect`` (default: its bounds) as GRAY_U8, 0 = unselected,
        255 = selected.  None when nothing is selected."""
        bounds = self.selection_bounds()
        if bounds is None:
            return None
        rect = rect or bounds
        self.check_rect(rect)
        data = self._selection_bytes(rect)
        if len(data) != rect.w * rect.h:
            raise HostError(f"{len(data)} selection bytes read for {rect.w}x{rect.h}")
        return ImageBuffer(rect.w, rect.h, "GRAY_U8", data)

    @abstractmethod
    def _selection_bytes(self, rect: Rect) -> bytes:
        """The selection's bytes over ``rect`` (inside the canvas), one per pixel, rows top to bottom."""

    # -- results
    @abstractmethod
    def add_result_layer(self, source_id: str, patch: Patch, name: str, provenance: dict) -> LayerInfo:
        """A NEW paint layer directly above the source layer, holding ``patch`` at its offset, in
        the source layer's colour space, recording ``provenance``.  One undo step removes it.
        The source layer is not touched."""

    def add_expanded_layer(self, source_id: str, growth, patch: Patch, name: str, provenance: dict) -> LayerInfo:
        """Grow the canvas by ``growth`` (``contract.expand.Growth``: px added on the left, top, right and
        bottom): every layer keeps its pixels, shifted by (left, top), and the selection moves with
        them; then add ``patch`` (in the GROWN canvas's coordinates) as a NEW layer above the source, as
        ``add_result_layer`` does.  As one undo step where the editor allows it (the standalone editor);
        Krita 5's scripting API has no undo macro: there it is two steps, the first undo removes the
        layer and the second restores the canvas.  Raises HostError, changing nothing, when the grown
        canvas is too large or the patch does not fit it."""
        raise HostError("This editor cannot grow its canvas: expand results cannot be applied here.")

    @abstractmethod
    def provenance(self, layer_id: str) -> dict | None:
        """The record ``add_result_layer`` stored with that layer (survives saving), or None."""

    @abstractmethod
    def show_preview(self, source_id: str, patch: Patch, name: str = "") -> LayerInfo:
        """Show a patch on the canvas without committing it: a temporary, locked layer directly
        above the source.  Replaces any previous preview."""

    @abstractmethod
    def clear_preview(self) -> None:
        """Remove the preview layer(s), if any."""

    def apply_preview(self, source_id: str, patch: Patch, name: str, provenance: dict) -> LayerInfo | None:
        """Turn the preview showing exactly ``patch`` above ``source_id`` into the result layer, as
        ``add_result_layer`` would make it; None when this host cannot (then the dock clears the
        preview and adds the layer).  Krita needs it: there the preview's insertion is an undo step,
        and removing it would be another, which a later Ctrl+Z would undo, bringing the preview back."""
        return None

    def change_token(self, layer_id: str, rect: Rect) -> object:
        """A value that changes whenever the layer's pixels or the selection over ``rect`` change (Live
        compares it from one check to the next).  This default reads both and takes their CRC (a few
        ms for a 1024² region); a host that knows when its pixels change gives something cheaper."""
        pixels = self.read_pixels(layer_id, rect)
        sel = self.read_selection(rect)
        return (rect.as_tuple(), zlib.crc32(pixels.data), None if sel is None else zlib.crc32(sel.data))

    # -- shared checks
    def require_supported(self, layer_id: str) -> LayerInfo:
        """The layer, or UnsupportedColorModel when the dock cannot work on it."""
        info = self.layer(layer_id)
        if not info.color.supported:
            raise UnsupportedColorModel(info.name, info.color)
        return info

    def check_rect(self, rect: Rect, what: str = "rect") -> None:
        if rect.w <= 0 or rect.h <= 0 or rect.w > jobs.MAX_SIDE or rect.h > jobs.MAX_SIDE:
            raise HostError(f"{what} must be 1–{jobs.MAX_SIDE} px on each side, got {rect.w}x{rect.h}")

    def check_canvas(self, size: tuple[int, int]) -> None:
        """A canvas size the editors take (1–MAX_SIDE px a side)."""
        if not all(1 <= v <= jobs.MAX_SIDE for v in size):
            raise HostError(f"the canvas would be {size[0]}x{size[1]} px; at most {jobs.MAX_SIDE} px a side")

    def check_patch(self, source: LayerInfo, patch: Patch, canvas: tuple[int, int] | None = None) -> None:
        """A patch fits a layer above ``source``: right layout, byte count, inside the canvas (``canvas``:
        the size the canvas will have, for a result that grows it)."""
        try:
            patch.image.check("patch")
        except ValueError as e:
            raise HostError(str(e)) from None
        fmt = source.color.pixel_format
        if patch.image.format != fmt or bool(patch.image.linear) != source.color.linear:
            raise HostError(f"the result is {patch.image.format}{' linear' if patch.image.linear else ''} but "
                            f"the layer {source.name!r} needs {fmt}{' linear' if source.color.linear else ''}")
        w, h = canvas or self.size
        if patch.x < 0 or patch.y < 0 or patch.x + patch.image.width > w or patch.y + patch.image.height > h:
            raise HostError(f"the result ({patch.image.width}x{patch.image.height} at {patch.x},{patch.y}) "
                            f"does not fit the canvas ({w}x{h})")


class Host(ABC):
    """The editor as a whole."""

    @property
    @abstractmethod
    def name(self) -> str:
        """e.g. "Krita 5.1.5" or "Diffusion Dock editor"."""

    @abstractmethod
    def active_document(self) -> HostDocument | None: ...

    @abstractmethod
    def open_converted_copy(self, document: HostDocument) -> HostDocument:
        """An RGBA copy of ``document`` (same depth when supported) opened beside it.  The
        original document is not modified.  This is the answer to UnsupportedColorModel."""

    def open_result_document(self, name: str, patch: Patch, layer_name: str, provenance: dict,
                             color: ColorInfo) -> HostDocument:
        """A NEW document the size of ``patch`` holding it as its one layer (named ``layer_name``,
        recording ``provenance``), in ``color`` (the source layer's colour space), opened beside the
        others.  Used for results that do not fit the source's canvas (upscale ×4, a large text-to-image).
        The source document is not touched."""
        raise HostError(f"{self.name} cannot open new documents")

    def watch(self, on_change: Callable[[], None]):
        """Call ``on_change`` (on the Qt thread) whenever the active document's layers or selection may
        have changed, until the returned ``watch.Watch`` is stopped.  This default polls (Krita has no
        Python signal for pixel changes); ``change_token`` tells a real change from none."""
        from .watch import PollWatch

        return PollWatch(on_change)

    def document(self) -> HostDocument:
        """The active document or NoDocument."""
        doc = self.active_document()
        if doc is None:
            raise NoDocument()
        return doc
