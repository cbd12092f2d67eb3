"""OpenRaster between the standalone editor and real Krita, both ways (kritarunner)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from plugin.diffusion_dock.editor import fileio, pixels
from plugin.diffusion_dock.editor.document import EditorDocument, Layer

from .editor_util import layer_array
from .krita_support import run_kritarunner
from .test_editor_files import random_layer
from .test_krita_host import SCRIPTS

pytestmark = pytest.mark.krita


@pytest.fixture(scope="module")
def ora_run(tmp_path_factory, krita_home):
    work = tmp_path_factory.mktemp("krita-ora")
    rng = np.random.default_rng(21)
    doc = EditorDocument(64, 48, "editor")
    bg, bg_arr = random_layer(rng, 64, 48, alpha=False)
    mid, mid_arr = random_layer(rng, 64, 48, (10, 7, 20, 15))
    top, top_arr = random_layer(rng, 64, 48, (40, 30, 24, 18))
    doc.layers = [Layer("top hidden", top, visible=False, provenance={"seed": 1}),
                  Layer("middle half", mid, opacity=0.5), Layer("Background", bg)]
    fileio.save_document(doc, work / "editor.ora")
    patch = rng.integers(0, 256, (9, 13, 4), dtype=np.uint8)
    patch[..., 3] = np.maximum(patch[..., 3], 1)
    (work / "krita_patch.in").write_bytes(patch.tobytes())
    proc = run_kritarunner(krita_home, [SCRIPTS], "dd_ora_check", [str(work)])
    assert (work / "results.json").exists(), proc.stdout[-2000:] + proc.stderr[-3000:]
    out = json.loads((work / "results.json").read_text())
    assert "crash" not in out, out["crash"]
    return work, out, [top_arr, mid_arr, bg_arr], patch


def test_krita_opens_the_editors_ora_with_every_layer_intact(ora_run):
    work, out, arrays, _ = ora_run
    assert out["size"] == [64, 48] and out["color"] == ["RGBA", "U8"]
    assert [la["name"] for la in out["layers"]] == ["top hidden", "middle half", "Background"]
    assert [la["visible"] for la in out["layers"]] == [False, True, True]
    assert [la["type"] for la in out["layers"]] == ["paintlayer"] * 3
    assert abs(out["layers"][1]["opacity"] - 128) <= 1 and out["layers"][2]["opacity"] == 255
    for la, arr in zip(out["layers"], arrays):
        got = np.frombuffer((work / la["file"]).read_bytes(), np.uint8).reshape(48, 64, 4)
        assert np.array_equal(got, arr), la["name"]             # Krita's BGRA = the editor's BGRA


def test_the_editor_opens_an_ora_saved_by_krita(ora_run):
    work, out, _, patch = ora_run
    assert out["saved"] is True
    doc = fileio.open_document(work / "krita.ora")
    assert doc.size == (50, 40)
    names = [la.name for la in doc.layers]
    assert names[:2] == ["hidden one", "offset patch"] and names[-1] == "Background"
    hidden, offset = doc.layers[0], doc.layers[1]
    assert hidden.visible is False and abs(hidden.opacity - 128 / 255) < 0.01
    arr = layer_array(offset.image)
    expected = np.zeros((40, 50, 4), np.uint8)
    expected[7:16, 11:24] = patch
    assert np.array_equal(arr, expected)                          # placed at Krita's offset
    assert (layer_array(hidden.image)[:4, :4] == [0, 0, 255, 255]).all()
    assert pixels.nonzero_bounds(hidden.image, channel=3).as_tuple() == (0, 0, 4, 4)
