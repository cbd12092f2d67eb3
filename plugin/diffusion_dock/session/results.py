"""What the dock does with a finished result: where it goes, showing it on the canvas before it is
committed, applying it as a new layer or a new document, applying a whole job, discarding.

Plain Python over the host interface (``host.Host``, ``HostDocument``) and the dock's session (saved
results, their patches, applied state); no Qt here, so it is tested directly against a memory host.
The artist's own layers are never changed: a result becomes a NEW layer above its source layer (or a
new document), and the preview is the host's own reusable preview layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import host as H
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
        """(document, source layer id, note) where a result goes; raises HostError."""
        doc = self.session.document_of(rec.job_id) or (self.host.active_document() if self.host else None)
        if doc is None:
            raise H.NoDocument()
        if tuple(doc.size) != tuple(rec.canvas):
            raise H.HostError(f"This result was made on a {rec.canvas[0]}×{rec.canvas[1]} canvas; the document "
                              f'"{doc.name}" is {doc.size[0]}×{doc.size[1]}.')
        src = rec.source_layer.get("id")
        try:
            doc.layer(src)
            return doc, src, ""
        except H.LayerNotFound:
            active = doc.active_layer()
            if active is None:
                raise H.HostError(f'The layer "{rec.source_layer.get("name")}" is gone: pick a layer to put the '
                                  f"result above.") from None
            return doc, active.id, (f' (its layer "{rec.source_layer.get("name")}" is gone: placed above '
                                    f'"{active.name}")')

    # --- preview -------------------------------------------------------------------------------------

    def preview(self, rec) -> str:
        """Show a result on the canvas without committing it (the host's preview layer); returns why it
        could not be shown, or "" when it is shown (or has nothing to show on this canvas)."""
        if rec.target != "layer" or self.host is None:
            self.clear_preview()
            return ""
        try:
            doc, src, _ = self.target(rec)
            if self.previewing is not None and not same_document(self.previewing[0], doc):
                self.clear_preview()
            # The document replaces its own preview (Krita reuses the layer: no undo step).
            doc.show_preview(src, self.session.patch(rec), rec.name)
            self.previewing = (doc, rec.id)
            return ""
        except SHOWN_ERRORS as e:
            self.clear_preview()
            return str(e)

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
                    doc, src, note = self.target(rec)
                    info = None
                    if keep and rec.id == shown[1]:
                        keep = False
                        info = doc.apply_preview(src, patch, rec.name, rec.provenance)
                        if info is None:
                            clear_preview_of(shown[0])
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


def clear_preview_of(doc) -> None:
    try:
        if not doc.closed:
            doc.clear_preview()
    except H.HostError:
        pass
