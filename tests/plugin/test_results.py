"""What the dock does with a saved result (``session.results.ResultActions``), against a memory host:
a new layer above the source with the source untouched, the preview reused as the layer, a canvas of
another size refused, a deleted source replaced by the active layer with a note, results that open as
documents in the right colour space, a whole job applied in order, discard."""

from __future__ import annotations

import numpy as np
import pytest

from plugin.diffusion_dock import host as H
from plugin.diffusion_dock.session.dock_session import DockSession
from plugin.diffusion_dock.session.results import ResultActions, color_of
from plugin.diffusion_dock.session.results_store import ResultStore, StoredResult, new_id
from plugin.diffusion_dock.session.settings import Settings

from .memory_host import MemoryDocument, MemoryHost

U8 = H.ColorInfo("RGBA", "U8", H.SRGB_PROFILE)
W, H_ = 32, 24


@pytest.fixture
def doc():
    d = MemoryDocument(W, H_, "art.kra")
    base = np.zeros((H_, W, 4), np.uint8)
    base[..., 1] = 200
    base[..., 3] = 255
    d.add("Paint", base, U8)
    return d


@pytest.fixture
def session(qapp, tmp_path):
    return DockSession(Settings(), ResultStore(tmp_path / "results"))


def saved(session, doc, index=0, job="job1", target="layer", value=99, fmt="BGRA_U8", linear=False) -> StoredResult:
    """A result of 8×6 px at (4, 5), saved in the store the way the session saves one."""
    src = doc.stack[-1]
    pixels = np.full((6, 8, 4), value, np.uint8)
    rec = StoredResult(id=new_id(job, index, 1000.0 + index), job_id=job, index=index, mode="inpaint", name=f"[Inpaint] r{index}",
                       x=4, y=5, width=8, height=6, format=fmt, linear=linear, seed=index,
                       provenance={"mode": "inpaint", "params": {"prompt": "r"}}, document=doc.name,
                       canvas=(W, H_), source_layer={"id": src.id, "name": src.name,
                                                    "color": ["RGBA", "U8", H.SRGB_PROFILE]},
                       target=target, created=1000.0 + index)
    return session.store.save(rec, pixels.tobytes())


def test_apply_adds_a_new_layer_above_the_source_and_never_changes_the_source(session, doc):
    before = doc.stack[-1].pixels.copy()
    actions = ResultActions(session, MemoryHost(doc))
    rec = saved(session, doc)
    done = actions.apply([rec])
    assert not done.error and len(done.created) == 1 and done.created[0].name == "[Inpaint] r0"
    assert [la.name for la in doc.stack] == ["[Inpaint] r0", "Paint"]
    new = doc.stack[0].pixels
    assert (new[5:11, 4:12] == 99).all() and not new[:5].any()
    assert np.array_equal(doc.stack[-1].pixels, before)
    assert session.store.get(rec.id).state == "applied"


def test_the_shown_preview_becomes_the_result_without_a_second_preview_layer(session, doc):
    actions = ResultActions(session, MemoryHost(doc))
    rec = saved(session, doc)
    assert actions.preview(rec) == ""
    assert [la.preview for la in doc.stack] == [True, False]
    actions.apply([rec])
    assert [(la.name, la.preview) for la in doc.stack] == [("[Inpaint] r0", False), ("Paint", False)]
    assert actions.previewing is None


def test_a_canvas_of_another_size_is_refused_with_a_clear_message(session, doc):
    rec = saved(session, doc)
    other = MemoryDocument(W + 1, H_, "other.kra")
    other.add("Paint", np.zeros((H_, W + 1, 4), np.uint8), U8)
    actions = ResultActions(session, MemoryHost(other))
    done = actions.apply([rec])
    assert done.created == [] and "32×24 canvas" in done.error and '"other.kra" is 33×24' in done.error
    assert actions.preview(rec).startswith("This result was made on a 32×24 canvas")
    assert len(other.stack) == 1 and session.store.get(rec.id).state == "new"


def test_a_deleted_source_layer_falls_back_to_the_active_layer_with_a_note(session, doc):
    rec = saved(session, doc)
    doc.stack.clear()
    doc.add("Other", np.zeros((H_, W, 4), np.uint8), U8)
    doc.active_id = doc.stack[0].id
    done = ResultActions(session, MemoryHost(doc)).apply([rec])
    assert done.notes == ['Applied (its layer "Paint" is gone: placed above "Other").']
    assert [la.name for la in doc.stack] == ["[Inpaint] r0", "Other"]


def test_document_results_open_as_new_documents_in_the_source_colour_space(session, doc):
    host = MemoryHost(doc)
    rec = saved(session, doc, target="document")
    done = ResultActions(session, host).apply([rec])
    [opened] = host.opened
    assert done.created == [opened] and opened.name == "art Inpaint" and len(doc.stack) == 1
    assert opened.stack[0].color == U8 and (opened.stack[0].pixels == 99).all()
    assert opened.stack[0].provenance["source_document"] == "art.kra"


@pytest.mark.parametrize("fmt, linear, expected", [
    ("BGRA_U8", False, H.ColorInfo("RGBA", "U8", H.SRGB_PROFILE)),      # the source's own
    ("RGBA_F32", True, H.ColorInfo("RGBA", "F32", H.LINEAR_PROFILE)),   # Krita's default for linear float
    ("BGRA_U16", False, H.ColorInfo("RGBA", "U16", H.SRGB_PROFILE)),
])
def test_the_colour_of_a_new_document(session, doc, fmt, linear, expected):
    rec = saved(session, doc, fmt="BGRA_U8")
    rec = StoredResult(**{**rec.__dict__, "format": fmt, "linear": linear})
    assert color_of(rec) == expected
    with pytest.raises(H.HostError, match="GRAY_U8 result cannot become a document"):
        color_of(StoredResult(**{**rec.__dict__, "format": "GRAY_U8"}))


def test_apply_all_takes_the_selected_job_in_order_and_skips_applied_ones(session, doc):
    a0, a1, a2 = (saved(session, doc, i, "a", value=10 + i) for i in range(3))
    b5 = saved(session, doc, 5, "b")        # the newest result
    actions = ResultActions(session, MemoryHost(doc))
    actions.apply([a1])
    a1 = session.store.get(a1.id)
    todo = ResultActions.job_to_apply([b5, a2, a1, a0], [a0])
    assert [r.id for r in todo] == [a0.id, a2.id]
    assert [r.id for r in ResultActions.job_to_apply([a0, b5], [])] == [b5.id]     # nothing selected: the newest job
    actions.apply(todo)
    # each result goes right above its source layer, in the order applied
    assert [la.name for la in doc.stack] == ["[Inpaint] r1", "[Inpaint] r0", "[Inpaint] r2", "Paint"]


def test_discard_removes_the_results_and_their_preview(session, doc):
    actions = ResultActions(session, MemoryHost(doc))
    rec = saved(session, doc)
    actions.preview(rec)
    actions.discard([rec])
    assert session.store.get(rec.id) is None and len(doc.stack) == 1


# --- expand: results that grow the canvas ------------------------------------------------------------------

GROWTH = {"expand_left": 5, "expand_top": 3, "expand_right": 7, "expand_bottom": 0}


def expand_saved(session, doc, index=0, value=120) -> StoredResult:
    """An expand result of a 32×24 canvas grown by 5, 3, 7, 0: a patch over the whole grown canvas
    (44×27), opaque on the new border and all zero over the old canvas, as the engine makes it."""
    src = doc.stack[-1]
    pixels = np.full((27, 44, 4), value, np.uint8)
    pixels[3:27, 5:37] = 0
    rec = StoredResult(id=new_id("grow", index, 2000.0 + index), job_id="grow", index=index, mode="expand",
                       name=f"[Expand] e{index}", x=0, y=0, width=44, height=27, format="BGRA_U8", seed=index,
                       provenance={"mode": "expand", "params": {"prompt": "more"}, "options": dict(GROWTH)},
                       document=doc.name, canvas=(W, H_), source_layer={"id": src.id, "name": src.name},
                       created=2000.0 + index)
    return session.store.save(rec, pixels.tobytes())


def test_an_expand_result_grows_the_canvas_keeping_every_old_pixel_then_adds_its_layer(session, doc):
    doc.stack[-1].pixels[..., 0] = np.arange(W)[None, :]                 # pixels that show a shift
    before = doc.stack[-1].pixels.copy()
    sel = np.zeros((H_, W), np.uint8)
    sel[10:, 20:] = 255                                                  # a selection touching two edges
    doc.select(sel)
    actions = ResultActions(session, MemoryHost(doc))
    first, second = expand_saved(session, doc, 0), expand_saved(session, doc, 1, value=60)
    assert "Apply grows the canvas to 44×27 (left 5 px, top 3 px, right 7 px)" in actions.preview(first)
    assert not any(la.preview for la in doc.stack)                       # nothing to show on this canvas yet
    done = actions.apply([first])
    assert not done.error and doc.size == (44, 27)
    assert [la.name for la in doc.stack] == ["[Expand] e0", "Paint"]
    grown = doc.stack[-1].pixels
    assert grown[3:27, 5:37].tobytes() == before.tobytes()              # bit for bit, shifted by (5, 3)
    assert not grown[:3].any() and not grown[:, :5].any() and not grown[:, 37:].any()
    assert np.array_equal(doc.selection[13:, 25:37], sel[10:, 20:]) and not doc.selection[:13].any()
    layer = doc.stack[0].pixels
    assert (layer[:3] == 120).all() and not layer[3:27, 5:37].any()
    # Another image of the same job goes onto the grown canvas: no second growth; it previews now.
    assert actions.preview(second) == "" and any(la.preview for la in doc.stack)
    actions.apply([second])
    assert doc.size == (44, 27) and [la.name for la in doc.stack] == ["[Expand] e0", "[Expand] e1", "Paint"]
    # Undo as in Krita (no undo macro there): each layer, then the canvas with its pixels and selection.
    doc.undo_last()
    doc.undo_last()
    assert doc.size == (44, 27) and [la.name for la in doc.stack] == ["Paint"]
    doc.undo_last()
    assert doc.size == (W, H_) and np.array_equal(doc.stack[-1].pixels, before) and np.array_equal(doc.selection, sel)


def test_an_expand_result_on_a_canvas_of_another_size_says_both_sizes(session, doc):
    rec = expand_saved(session, doc)
    other = MemoryDocument(40, 24, "other.kra")
    other.add("Paint", np.zeros((24, 40, 4), np.uint8), U8)
    done = ResultActions(session, MemoryHost(other)).apply([rec])
    assert done.error.endswith('This result was made on a 32×24 canvas (and grows it to 44×27); the document '
                               '"other.kra" is 40×24.')
    assert other.size == (40, 24) and len(other.stack) == 1


def test_an_expand_record_that_does_not_say_how_far_is_refused(session, doc):
    rec = expand_saved(session, doc)
    rec = session.store.set_state(rec.id, "new")
    broken = StoredResult(**{**rec.__dict__, "provenance": {"mode": "expand", "options": {"expand_left": -4}}})
    done = ResultActions(session, MemoryHost(doc)).apply([broken])
    assert "cannot say how far to grow the canvas: expand_left must be a whole number ≥ 0" in done.error
    assert doc.size == (W, H_) and len(doc.stack) == 1
