"""What the dock does with a finished result: where it goes, showing it on the canvas before it is
committed, applying it as a new layer or a new document, applying a whole job, discarding.

Plain Python over the host interface (``host.Host``, ``HostDocument``) and the dock's session (saved
results, their patches, applied state); no Qt here, so it is tested directly against a memory host.
The artist's own layers are never changed: a result becomes a NEW layer above its source layer (or a
new document), and the preview is the host's own reusable preview layer.  A result of a mode that grows
the canvas (Expand) is in the grown canvas's coordinates: applied on the canvas it was made on, the
canvas grows first (``HostDocument.add_expanded_layer``); the other results of the same job then go
onto the grown canvas as plain new layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import host as H
from ..runtime.coreapi import expand, modes
from .job_builder import mode_label

SHOWN_ERRORS = (H.HostError, OSError, KeyError, ValueError)   # what applying or previewing may run into


@dataclass
class Applied:
    """What ``ResultActions.apply`` did: the layers or documents it created, notes for the artist, and
    the message of the error that stopped it (the results before it are applied)."""

    created: list = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str = ""


def same_document(a, b) -> bool:
    """Two host documents on the same editor document (hosts make new wrappers as they go)."""
    if a is b:
        return True
    inner_a, inner_b = getattr(a, "doc", None), getattr(b, "doc", None)
    return inner_a is not None and inner_b is not None and (inner_a is inner_b or inner_a == inner_b)


def color_of(rec) -> H.ColorInfo:
    """The colour space of a new document holding ``rec``: its source layer's when it matches the
    result's depth and light, else Krita's default profile for the depth."""
    depth = H.FORMAT_DEPTHS.get(rec.format)
    if depth is None:
        raise H.HostError(f"a {rec.format} result cannot become a document")
    color = rec.source_layer.get("color")
    if isinstance(color, list) and len(color) == 3 and tuple(color[:2]) == ("RGBA", depth):
        info = H.ColorInfo(*color)
        if info.linear == bool(rec.linear):
            return info
    return H.ColorInfo("RGBA", depth, H.LINEAR_PROFILE if rec.linear else H.SRGB_PROFILE)


class ResultActions:
    """``session``: the dock session (``document_of``, ``patch``, ``mark_applied``, ``discard``);
    ``host``: the editor (None in a detached dock)."""

    def __init__(self, session, host: H.Host | None):
        self.session = session
        self.host = host
        self.previewing: tuple | None = None       # (HostDocument, result id) shown on the canvas

    def target(self, rec) -> tuple:
        """(document, source layer id, note, growth) where a result goes; ``growth``: how the canvas must
        grow first (an expand result on the canvas it was made on), else None.  Raises HostError."""
        doc = self.session.document_of(rec.job_id) or (self.host.active_document() if self.host else None)
        if doc is None:
            raise H.NoDocument()
        growth = growth_of(rec)
        size, made = tuple(doc.size), tuple(rec.canvas)
        grown = growth.canvas(made) if growth is not None else None
        if size != made and size != grown:
            also = f" (and grows it to {grown[0]}×{grown[1]})" if grown else ""
            raise H.HostError(f"This result was made on a {made[0]}×{made[1]} canvas{also}; the document "
                              f'"{doc.name}" is {size[0]}×{size[1]}.')
        pending = growth if size == made else None     # else another result of the job grew it already
        src = rec.source_layer.get("id")
        try:
            doc.layer(src)
            return doc, src, "", pending
        except H.LayerNotFound:
            active = doc.active_layer()
            if active is None:
                raise H.HostError(f'The layer "{rec.source_layer.get("name")}" is gone: pick a layer to put the '
                                  f"result above.") from None
            return doc, active.id, (f' (its layer "{rec.source_layer.get("name")}" is gone: placed above '
                                    f'"{active.name}")'), pending

    # --- preview -------------------------------------------------------------------------------------

    def preview(self, rec) -> str:
        """Show a result on the canvas without committing it (the host's preview layer); returns why it
        could not be shown, or "" when it is shown (or has nothing to show on this canvas)."""
        if rec.target != "layer" or self.host is None:
            self.clear_preview()
            return ""
        try:
            doc, src, _, growth = self.target(rec)
            if growth is not None:         # its canvas is not there yet
                self.clear_preview()
                w, h = growth.canvas(tuple(rec.canvas))
                return f"Apply grows the canvas to {w}×{h} ({growth.describe()}); the result shows once applied"
            if self.previewing is not None and not same_document(self.previewing[0], doc):
                self.clear_preview()
            # The document replaces its own preview (Krita reuses the layer: no undo step).
            doc.show_preview(src, self.session.patch(rec), rec.name)
            self.previewing = (doc, rec.id)
            return ""
        except SHOWN_ERRORS as e:
            self.clear_preview()
            return str(e)

    def show_patch(self, doc, source_id: str, patch, name: str, key: str) -> str:
        """Show a patch that is not a saved result (a Live frame) in the preview layer, remembered under
        ``key``; returns why it could not be shown, or ""."""
        try:
            if self.previewing is not None and not same_document(self.previewing[0], doc):
                self.clear_preview()
            doc.show_preview(source_id, patch, name)
            self.previewing = (doc, key)
            return ""
        except SHOWN_ERRORS as e:
            self.clear_preview()
            return str(e)

    def commit_patch(self, doc, source_id: str, patch, name: str, provenance: dict, key: str) -> H.LayerInfo:
        """The patch shown under ``key`` becomes a NEW layer above its source: the preview layer itself
        where the host can (in Krita its insertion is then the layer's one undo step), else a new layer
        added once the preview is gone.  Raises HostError."""
        shown = self.previewing
        info = None
        if shown is not None and shown[1] == key and same_document(shown[0], doc):
            self.previewing = None
            info = doc.apply_preview(source_id, patch, name, provenance)
            if info is None:
                clear_preview_of(shown[0])
        else:
            self.clear_preview()
        return info or doc.add_result_layer(source_id, patch, name, provenance)

    def clear_preview(self) -> None:
        if self.previewing is None:
            return
        doc, _ = self.previewing
        self.previewing = None
        clear_preview_of(doc)

    # --- apply ---------------------------------------------------------------------------------------

    def apply(self, records) -> Applied:
        """Each result becomes a NEW layer above its source (or a new document).  The result on the
        canvas becomes the layer itself (in Krita no undo step comes from the preview); otherwise the
        preview goes before any layer is added.  Stops at the first error."""
        out = Applied()
        shown = self.previewing
        records = list(records)
        keep = shown is not None and any(r.id == shown[1] and r.target == "layer" for r in records)
        if keep:
            records.sort(key=lambda r: r.id != shown[1])
            self.previewing = None
        else:
            self.clear_preview()
        for rec in records:
            try:
                patch = self.session.patch(rec)
                if rec.target == "document":
                    title = f"{rec.document.rsplit('.', 1)[0]} {mode_label(rec.mode)}"
                    prov = {**rec.provenance, "source_layer": rec.source_layer, "source_document": rec.document}
                    new_doc = self.host.open_result_document(title, patch, rec.name, prov, color_of(rec))
                    where = f'document "{new_doc.name}"'
                    out.created.append(new_doc)
                else:
                    doc, src, note, growth = self.target(rec)
                    info = None
                    if keep and rec.id == shown[1]:
                        keep = False
                        info = doc.apply_preview(src, patch, rec.name, rec.provenance)
                        if info is None:
                            clear_preview_of(shown[0])
                    if info is None and growth is not None:
                        info = doc.add_expanded_layer(src, growth, patch, rec.name, rec.provenance)
                    info = info or doc.add_result_layer(src, patch, rec.name, rec.provenance)
                    where = f'layer "{info.name}" in "{doc.name}"{note}'
                    out.created.append(info)
                    if note:
                        out.notes.append(f"Applied{note}.")
            except SHOWN_ERRORS as e:
                out.error = f"Could not apply {rec.name}: {e}"
                if shown is not None:
                    clear_preview_of(shown[0])
                break
            self.session.mark_applied(rec, where)
        if keep:
            clear_preview_of(shown[0])
        return out

    @staticmethod
    def job_to_apply(records, selected) -> list:
        """Every result of one job not applied yet: the selected result's job, else the latest job."""
        records = list(records)
        if not records:
            return []
        job_id = selected[0].job_id if selected else max(records, key=lambda r: r.created).job_id
        return sorted((r for r in records if r.job_id == job_id and r.state != "applied"), key=lambda r: r.index)

    def discard(self, records) -> None:
        self.clear_preview()
        for rec in records:
            self.session.discard(rec)


def growth_of(rec):
    """How far a result of a mode that grows the canvas (Expand) grows it (``expand.Growth``, from its
    provenance's options); None for the other modes.  HostError when the record does not say."""
    known = modes.MODE_SPECS.get(rec.mode)
    if known is None or not known.grows_canvas:
        return None
    try:
        growth = expand.Growth.from_dict((rec.provenance or {}).get("options") or {})
    except (ValueError, AttributeError) as e:
        raise H.HostError(f"This result's record cannot say how far to grow the canvas: {e}") from None
    if growth.empty:
        raise H.HostError("This result's record does not say how far to grow the canvas.")
    return growth


def clear_preview_of(doc) -> None:
    try:
        if not doc.closed:
            doc.clear_preview()
    except H.HostError:
        pass
