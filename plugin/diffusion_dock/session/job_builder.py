"""From the dock's settings and the editor's document to one ``JobRequest``.

The dock reads only the pixels a job needs.  The region comes from the same pure functions the engine
uses (``plan.selection_region`` and ``plan.text_region``, driven by the mode's ``ModeSpec``), so the engine finds in the request exactly the
region it plans: the selection's box grown by *grow* and padded with context for selection jobs, the
layer's content without a selection, the selection's box grown by *grow* for text-to-image, and for a
mode that grows the canvas (Expand) the strips of the layer beside each grown side
(``expand.context_rect``), whatever is selected.  Pixels
pass through in the layer's own layout; the engine converts.  Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .. import host as H
from ..runtime.coreapi import controls, expand, geometry, jobs, modes, params, plan

Rect = geometry.Rect


class DockError(H.HostError):
    """A job cannot be built: one readable line; ``parameter`` names the input at fault (or None)."""

    code = "invalid_parameter"

    def __init__(self, message: str, parameter: str | None = None):
        super().__init__(message)
        self.parameter = parameter


@dataclass(frozen=True)
class ControlSpec:
    """One control of the dock's list: its layer (None = the active layer), type, strength, start/end."""

    layer: str | None = None
    type: str = "scribble"
    strength: float = 1.0
    start: float = 0.0
    end: float = 1.0
    active: bool = True


@dataclass(frozen=True)
class JobSpec:
    """What the dock's form says."""

    mode: str
    params: jobs.Params = jobs.Params()
    options: jobs.Options = jobs.Options()
    depth_layer: str | None = None      # modes with depth_source: a layer holding the depth (None = estimate it)
    image_to_image: bool = False        # modes whose image is optional: start from the layer's pixels
    model: str | None = None
    controls: tuple[ControlSpec, ...] = ()   # modes with ModeSpec.controls


@dataclass(frozen=True)
class PreparedJob:
    request: jobs.JobRequest
    document: H.HostDocument
    source: H.LayerInfo
    region: Rect                        # the canvas area read (or painted, for text-to-image)
    target: str                         # "layer": a new layer above the source; "document": a new document
    summary: str
    control_layers: tuple[str, ...] = ()   # the name of each control's layer (the results' provenance says)


def with_control_layers(provenance: dict, layers: tuple[str, ...]) -> dict:
    """A result's provenance with the name of each control's layer (``layer``) in its ``controls``."""
    used = provenance.get("controls")
    if not used or not layers:
        return provenance
    return {**provenance, "controls": [{**c, "layer": name} if name else dict(c)
                                       for c, name in zip(used, (*layers, *[""] * len(used)))]}


def mode_label(mode: str) -> str:
    known = modes.MODE_SPECS.get(mode)
    return known.label if known else mode


def describe(mode: str, prompt: str, layer: str) -> str:
    known = modes.MODE_SPECS.get(mode)
    text = " ".join(prompt.split()) if known and known.uses_prompt else ""
    if len(text) > 32:
        text = text[:31].rstrip() + "…"
    return f"{mode_label(mode)}{f' “{text}”' if text else ''} · {layer}"


def text_size(canvas: tuple[int, int]) -> tuple[int, int]:
    """Default text-to-image size: the canvas, rounded down to multiples of 8 (inside the engine's range)."""
    lo, hi = int(params.RANGES["width"].low), int(params.RANGES["width"].high)
    w, h = (max(lo, min(hi, v - v % 8)) for v in canvas)
    return w, h


def _content(doc: H.HostDocument, source: H.LayerInfo, mode: str) -> Rect:
    canvas = Rect(0, 0, *doc.size)
    bounds = source.bounds.intersect(canvas)
    if bounds.empty:
        raise DockError(f'The layer "{source.name}" is empty: nothing to {mode_label(mode).split()[0].lower()}. '
                        f"Pick a layer with pixels or select an area.", "layer")
    return bounds


def _growing(doc: H.HostDocument, source: H.LayerInfo, spec: JobSpec, canvas: tuple[int, int]):
    """(region read, request) of a mode that grows the canvas: the layer beside each grown side; the
    selection is not used (the sizes say where to paint), so one touching or crossing the canvas's
    edge changes nothing."""
    growth = expand.Growth.of(spec.options)
    if growth.empty:
        raise DockError(f"{mode_label(spec.mode)}: set how many px to add on at least one side.", "expand")
    _content(doc, source, spec.mode)
    region = expand.context_rect(canvas, growth)
    image = doc.read_pixels(source.id, region)
    return region, jobs.JobRequest(spec.mode, spec.params, spec.options, model=spec.model, image=image,
                                   origin=(region.x, region.y), canvas=canvas)


def image_region(doc: H.HostDocument, source: H.LayerInfo, spec: JobSpec) -> Rect:
    """The canvas area a job that reads the layer's pixels reads: the selection's region (grown, with
    context), else the layer's content.  Raises DockError for an empty layer."""
    sel = doc.selection_bounds()
    if sel is not None:
        return plan.selection_region(modes.MODE_SPECS[spec.mode], sel, doc.size, spec.options)
    return _content(doc, source, spec.mode)


def build(doc: H.HostDocument, layer_id: str | None, spec: JobSpec) -> PreparedJob:
    """The request for ``spec`` on layer ``layer_id`` (None: the active layer) of ``doc``.

    Raises DockError (what to do), UnsupportedColorModel (offer a converted copy), HostError.
    """
    mode = spec.mode
    if mode not in modes.MODE_SPECS:
        raise DockError(f"unknown mode {mode!r}", "mode")
    ms = modes.MODE_SPECS[mode]
    if layer_id is None:
        active = doc.active_layer()
        if active is None:
            raise DockError("Pick a layer first.", "layer")
        layer_id = active.id
    source = doc.require_supported(layer_id)
    if source.preview:
        raise DockError("That is the dock's preview layer: pick the layer the result should go above.", "layer")
    canvas = doc.size
    sel = doc.selection_bounds()
    o, p = spec.options, spec.params
    fmt, linear = source.color.pixel_format, source.color.linear
    if ms.selection != modes.SELECTION_OPTIONAL and sel is None:
        raise DockError(f"{ms.label} works on a selection: {ms.selection_hint} first.", "selection")

    mask = image = depth = None
    target = ms.target
    if ms.grows_canvas:
        region, req = _growing(doc, source, spec, canvas)
    elif ms.image == modes.IMAGE_OPTIONAL and not spec.image_to_image:
        # No pixels to read: the result is painted in the layer's own format.
        o = replace(o, output_format=fmt, output_linear=linear)
        if sel is None:
            w, h = (o.width, o.height) if o.width and o.height else text_size(canvas)
            o = replace(o, width=w, height=h)
        region = plan.text_region(sel, canvas, o)
        if sel is not None:
            mask = doc.read_selection(region)
            o = replace(o, width=None, height=None)
        elif region.w > canvas[0] or region.h > canvas[1]:
            target = modes.TARGET_DOCUMENT
        req = jobs.JobRequest(mode, p, o, model=spec.model, mask=mask, origin=(region.x, region.y),
                              canvas=canvas)
    else:
        region = image_region(doc, source, spec)
        image = doc.read_pixels(source.id, region)
        if sel is not None:
            mask = doc.read_selection(region)
        if "depth_source" in ms.options:
            if spec.depth_layer:
                if spec.depth_layer == source.id:
                    raise DockError("The depth layer must be another layer than the one restyled.", "depth_source")
                depth_info = doc.require_supported(spec.depth_layer)
                depth = doc.read_pixels(depth_info.id, region)
                o = replace(o, depth_source="given")
            else:
                o = replace(o, depth_source="auto")
        if "width" in ms.options:      # the image's own size
            o = replace(o, width=None, height=None)
        req = jobs.JobRequest(mode, p, o, model=spec.model, image=image, mask=mask, depth=depth,
                              origin=(region.x, region.y), canvas=canvas)
    layers: tuple[str, ...] = ()
    if ms.controls and any(c.active for c in spec.controls):
        read = read_controls(doc, source, region, spec.controls)
        req, layers = replace(req, controls=tuple(c for c, _ in read)), tuple(name for _, name in read)
    try:
        req = jobs.validate(req)
    except params.ValidationError as e:
        raise DockError(str(e), e.parameter) from None
    return PreparedJob(req, doc, source, region, target, describe(mode, p.prompt, source.name), layers)


def read_controls(doc: H.HostDocument, source: H.LayerInfo, region: Rect, specs) -> tuple:
    """(control, its layer's name) of each active control: the pixels over exactly the region the job reads
    (or paints), in each control layer's own layout, like the source layer's."""
    if region.x < 0 or region.y < 0 or region.x + region.w > doc.size[0] or region.y + region.h > doc.size[1]:
        raise DockError("Control layers need the painted area inside the canvas: choose a size no larger than "
                        "the canvas, or select an area.", "controls")
    out = []
    for c in (c for c in specs if c.active):
        info = doc.require_supported(c.layer or source.id)
        if info.preview:
            raise DockError("A control cannot be the dock's preview layer: pick another layer.", "controls")
        out.append((controls.Control(c.type, doc.read_pixels(info.id, region), c.strength, c.start, c.end,
                                     origin=(region.x, region.y)), info.name))
    return tuple(out)
