"""Opening and saving in the standalone editor: OpenRaster round trips and structure, PNG, JPEG."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
import zipfile

import numpy as np
import pytest
from PIL import Image

from plugin.diffusion_dock.editor import fileio, pixels
from plugin.diffusion_dock.editor.document import EditorDocument, Layer
from plugin.diffusion_dock.runtime.qt import QtGui

from .editor_util import layer_array


def random_layer(rng, w, h, rect=None, alpha=True):
    """A canvas-sized layer, random BGRA inside ``rect`` (x, y, w, h), transparent outside."""
    arr = np.zeros((h, w, 4), np.uint8)
    x, y, rw, rh = rect or (0, 0, w, h)
    block = rng.integers(0, 256, (rh, rw, 4), dtype=np.uint8)
    if not alpha:
        block[..., 3] = 255
    else:
        block[..., 3] = np.maximum(block[..., 3], 1)
    arr[y:y + rh, x:x + rw] = block
    img = pixels.new_layer_image(w, h)
    pixels.write_rect(img, 0, 0, w, h, arr.tobytes())
    return img, arr


@pytest.fixture
def layered_doc():
    rng = np.random.default_rng(3)
    doc = EditorDocument(64, 48, "layered")
    bg, bg_arr = random_layer(rng, 64, 48, alpha=False)
    mid, mid_arr = random_layer(rng, 64, 48, (10, 7, 20, 15))
    top, top_arr = random_layer(rng, 64, 48, (40, 30, 24, 18))
    prov = {"mode": "inpaint", "seed": 1234, "params": {"prompt": "red scarf — ünïcode"}}
    doc.layers = [Layer("[Inpaint] red scarf (seed 1234)", top, visible=False, provenance=prov),
                  Layer("middle", mid, opacity=0.5), Layer("Background", bg)]
    return doc, [top_arr, mid_arr, bg_arr]


def test_ora_layout_is_what_krita_gimp_and_mypaint_expect(tmp_path, layered_doc):
    doc, _ = layered_doc
    path = tmp_path / "out.ora"
    fileio.save_document(doc, path)
    with zipfile.ZipFile(path) as z:
        first = z.infolist()[0]
        assert first.filename == "mimetype" and first.compress_type == zipfile.ZIP_STORED
        assert z.read("mimetype") == b"image/openraster"
        names = set(z.namelist())
        assert {"stack.xml", "mergedimage.png", "Thumbnails/thumbnail.png"} <= names
        root = ET.fromstring(z.read("stack.xml"))
        assert root.tag == "image" and (root.get("w"), root.get("h")) == ("64", "48")
        layers = root.find("stack").findall("layer")
        assert [el.get("name") for el in layers] == ["[Inpaint] red scarf (seed 1234)", "middle", "Background"]
        assert [el.get("visibility") for el in layers] == ["hidden", "visible", "visible"]
        assert [(el.get("x"), el.get("y")) for el in layers] == [("40", "30"), ("10", "7"), ("0", "0")]
        assert float(layers[1].get("opacity")) == 0.5
        for el in layers:
            assert el.get("src") in names
        # Layers are stored cropped to their content.
        mid = Image.open(io.BytesIO(z.read(layers[1].get("src"))))
        assert mid.size == (20, 15) and mid.mode == "RGBA"
        merged = Image.open(io.BytesIO(z.read("mergedimage.png")))
        assert merged.size == (64, 48)
        thumb = Image.open(io.BytesIO(z.read("Thumbnails/thumbnail.png")))
        assert max(thumb.size) <= 256


def test_ora_round_trip_keeps_every_byte_and_attribute(tmp_path, layered_doc):
    doc, arrays = layered_doc
    path = tmp_path / "round.ora"
    fileio.save_document(doc, path)
    back = fileio.open_document(path)
    assert back.size == (64, 48) and back.path == str(path)
    assert [la.name for la in back.layers] == [la.name for la in doc.layers]
    assert [la.visible for la in back.layers] == [False, True, True]
    assert [la.opacity for la in back.layers] == [1.0, 0.5, 1.0]
    assert back.layers[0].provenance == doc.layers[0].provenance
    assert back.layers[1].provenance is None
    for layer, arr in zip(back.layers, arrays):
        assert np.array_equal(layer_array(layer.image), arr)
    assert not back.modified and not back.undo_stack.canUndo()


def test_ora_merged_image_matches_the_composite(tmp_path, layered_doc):
    doc, _ = layered_doc
    path = tmp_path / "m.ora"
    fileio.save_document(doc, path)
    with zipfile.ZipFile(path) as z:
        merged = np.asarray(Image.open(io.BytesIO(z.read("mergedimage.png"))).convert("RGBA"))
    comp = layer_array(doc.composite(with_preview=False).convertToFormat(pixels.LAYER_FORMAT))
    assert np.abs(merged[..., [2, 1, 0, 3]].astype(int) - comp.astype(int)).max() <= 1


def test_reads_nested_stacks_offsets_and_hidden_groups(tmp_path):
    """An .ora as other programs write it: nested stacks (groups), layer offsets, hidden groups."""
    def png(w, h, rgba):
        buf = io.BytesIO()
        Image.new("RGBA", (w, h), rgba).save(buf, "PNG")
        return buf.getvalue()

    stack = ('<?xml version="1.0" encoding="UTF-8"?><image version="0.0.3" w="20" h="10"><stack>'
             '<stack name="group" visibility="hidden" x="2" y="1">'
             '<layer name="in group" src="data/a.png" x="3" y="2" opacity="0.5"/></stack>'
             '<layer name="plain" src="data/b.png"/>'
             '</stack></image>')
    path = tmp_path / "foreign.ora"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(zipfile.ZipInfo("mimetype"), b"image/openraster")
        z.writestr("stack.xml", stack)
        z.writestr("data/a.png", png(4, 3, (255, 0, 0, 255)))
        z.writestr("data/b.png", png(20, 10, (0, 0, 255, 128)))
    doc = fileio.open_document(path)
    assert [la.name for la in doc.layers] == ["in group", "plain"]
    grp = doc.layers[0]
    assert grp.visible is False and grp.opacity == 0.5
    arr = layer_array(grp.image)
    assert (arr[3:6, 5:9] == [0, 0, 255, 255]).all()              # red at (2+3, 1+2), BGRA
    assert arr[2, 5, 3] == 0 and arr[3, 9, 3] == 0 and arr[6, 5, 3] == 0
    assert (layer_array(doc.layers[1].image) == [255, 0, 0, 128]).all()


@pytest.mark.parametrize("content", [b"not a zip", None])
def test_bad_ora_files_are_refused_with_the_file_name(tmp_path, content):
    path = tmp_path / "bad.ora"
    if content is None:
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("mimetype", b"image/png")
            z.writestr("stack.xml", "<image w='4' h='4'><stack/></image>")
    else:
        path.write_bytes(content)
    with pytest.raises(fileio.FileError, match="bad.ora"):
        fileio.open_document(path)


def test_png_round_trip_is_exact_with_alpha(tmp_path):
    rng = np.random.default_rng(5)
    doc = EditorDocument(33, 21, "p")
    img, arr = random_layer(rng, 33, 21)
    doc.layers = [Layer("only", img)]
    path = tmp_path / "x.png"
    assert fileio.save_document(doc, path) is False                 # flattened
    back = fileio.open_document(path)
    assert [la.name for la in back.layers] == ["x"]
    assert np.array_equal(layer_array(back.layers[0].image), arr)
    rgba = np.asarray(Image.open(path))
    assert np.array_equal(rgba, arr[..., [2, 1, 0, 3]])           # readable by everyone else too


def test_png_of_several_layers_is_their_composite(tmp_path, layered_doc):
    doc, _ = layered_doc
    path = tmp_path / "flat.png"
    fileio.save_document(doc, path)
    saved = np.asarray(Image.open(path).convert("RGBA"))[..., [2, 1, 0, 3]]
    comp = layer_array(doc.composite(with_preview=False).convertToFormat(pixels.LAYER_FORMAT))
    assert np.abs(saved.astype(int) - comp.astype(int)).max() <= 1


def test_jpeg_round_trip_flattens_over_white(tmp_path):
    doc = EditorDocument.new(64, 40, "j", background=QtGui.QColor(40, 120, 200))
    clear = doc.add_layer("hole")
    pixels.write_rect(doc.layers[1].image, 0, 0, 8, 8, bytes(8 * 8 * 4))   # transparent corner in the bottom
    del clear
    path = tmp_path / "x.jpg"
    fileio.save_document(doc, path)
    back = fileio.open_document(path)
    arr = layer_array(back.layers[0].image).astype(int)
    assert back.size == (64, 40)
    assert np.abs(arr[20:, 20:, :3] - [200, 120, 40]).max() <= 4     # BGR of the colour
    assert np.abs(arr[1:6, 1:6, :3] - 255).max() <= 4                # transparent → white
    assert (arr[..., 3] == 255).all()


def test_unknown_format_is_refused(tmp_path, editor_doc):
    with pytest.raises(fileio.FileError, match=r"\.ora, \.png"):
        fileio.save_document(editor_doc, tmp_path / "x.tiff")
    with pytest.raises(fileio.FileError, match="cannot open"):
        fileio.open_document(tmp_path / "x.gif")


def test_a_failed_save_leaves_no_partial_file(tmp_path, editor_doc):
    target = tmp_path / "missing-dir" / "x.ora"
    with pytest.raises(fileio.FileError, match="x.ora"):
        fileio.save_document(editor_doc, target)
    assert not target.exists()


def test_window_open_and_save_as_ora_marks_clean(qtbot, tmp_path, editor_window, layered_doc):
    doc, _ = layered_doc
    fileio.save_document(doc, tmp_path / "a.ora")
    assert editor_window.open_path(tmp_path / "a.ora")
    opened = editor_window.document
    assert opened.name == "a.ora" and len(opened.layers) == 3
    assert doc is not opened and editor_window.canvas.doc is opened
    opened.add_layer("new")
    assert opened.modified
    assert editor_window.save_path(tmp_path / "b.ora")
    assert not opened.modified and opened.path == str(tmp_path / "b.ora")
    assert [la.name for la in fileio.open_document(tmp_path / "b.ora").layers][0] == "new"
    assert not editor_window.open_path(tmp_path / "nope.ora")       # error shown, document kept
    assert "nope.ora" in editor_window.last_error
    assert editor_window.document is opened


@pytest.mark.parametrize("name", ["x.ora", "x.png", "x.jpg"])
@pytest.mark.parametrize("limit", [0, 100, 3000])
def test_save_and_export_on_a_full_disk_keep_the_old_file(tmp_path, monkeypatch, layered_doc, name, limit):
    """Save (.ora) and Export (.png, .jpg) through the atomic writer: a disk that fills up after ``limit``
    bytes leaves the file that was there, no temporary file, and one message naming the file and why."""
    from ..helpers import disk_full_after

    doc, _ = layered_doc
    target = tmp_path / name
    target.write_bytes(b"the previous save")
    disk_full_after(monkeypatch, limit)
    with pytest.raises(fileio.FileError) as e:
        fileio.save_document(doc, target)
    assert str(e.value) == f"cannot write {target}: No space left on device"
    assert target.read_bytes() == b"the previous save" and sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_the_window_reports_a_full_disk_and_keeps_the_document_modified(tmp_path, monkeypatch, editor_window):
    from ..helpers import disk_full_after

    doc = editor_window.document
    doc.add_layer("new")
    disk_full_after(monkeypatch, 10)
    assert not editor_window.save_path(tmp_path / "a.ora")
    assert editor_window.last_error == f"cannot write {tmp_path / 'a.ora'}: No space left on device"
    assert doc.modified and not (tmp_path / "a.ora").exists() and list(tmp_path.iterdir()) == []
