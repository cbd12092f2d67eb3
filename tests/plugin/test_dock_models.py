"""The dock's model, LoRA and embedding choices, through the REAL engine on the tiny models: the engine
lists an imported model (a non-catalogue folder) for inpainting and the LoRA/embedding files; the form
offers them for the mode, the choice is saved per mode, and a job run with the chosen model and a LoRA
records both in its result's provenance."""

from __future__ import annotations

import importlib.util
import shutil

import pytest

from core.devtools import tiny_adapters as T
from plugin.diffusion_dock.editor import pixels

from .dock_util import close_session, make_session, spin_until, wait_job
from .editor_util import open_window

W, H = 64, 64


@pytest.fixture(scope="module")
def models(tiny_root, tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    shutil.copytree(tiny_root / "sd2-inpainting", d / "sd2-inpainting")
    shutil.copytree(tiny_root / "sd2-inpainting", d / "my-inpaint")
    T.save(T.lora_state(tiny_root / "sd2-inpainting", seed=1), d / "loras" / "tiny-lora.safetensors")
    T.save(T.embedding_state(tiny_root / "sd2-inpainting", seed=3), d / "embeddings" / "tinystyle.safetensors")
    return d


@pytest.fixture(scope="module")
def session(qapp, models, tmp_path_factory):
    s = make_session(models, tmp_path_factory.mktemp("results"))
    yield s
    close_session(s)


def test_choices_come_from_the_engine_are_saved_per_mode_and_recorded(qtbot, session, tmp_path):
    if importlib.util.find_spec("peft") is None:
        pytest.skip("peft is not installed (pyproject lists it)")
    win, _ = open_window(qtbot, session, W, H, 2, "models-test")
    panel, form = win.panel, win.panel.form
    session.start_engine()
    spin_until(lambda: session.capabilities is not None, 120, "the engine's capabilities")
    panel.set_mode("inpaint")
    listed = [form.model_box.itemData(i) for i in range(form.model_box.count())]
    assert listed[0] is None and set(listed[1:]) == {"sd2-inpainting", "my-inpaint"}
    assert [b.text() for b, _s in form.loras._rows.values()] == ["tiny-lora"]
    assert list(form.embeddings._rows) == ["tinystyle.safetensors"]
    form.model_box.setCurrentIndex(form.model_box.findData("my-inpaint"))
    box, spin = form.loras._rows["tiny-lora.safetensors"]
    box.setChecked(True)
    spin.setValue(0.7)
    form.embeddings._rows["tinystyle.safetensors"][0].setChecked(True)
    panel.set_mode("generate")                       # another mode: its own choice (none fits: default)
    assert form.model_box.currentData() is None
    panel.set_mode("inpaint")
    assert form.model_box.currentData() == "my-inpaint"

    mask = pixels.new_mask(W, H)
    pixels.write_rect(mask, 16, 16, 24, 24, bytes([255]) * 24 * 24)
    win.document.set_selection(mask)
    form.prompt.setPlainText("a tinystyle cat")
    form.steps.setValue(2)
    form.seed.setText("5")
    item = panel.generate()
    assert item is not None, panel.last_message
    assert item.prepared.request.model == "my-inpaint"
    assert item.prepared.request.params.loras == (("tiny-lora.safetensors", 0.7),)
    wait_job(item)
    assert item.state == "done", item.message
    prov = item.results[0].provenance
    assert prov["model"] == "my-inpaint"
    assert prov["params"]["loras"] in ([["tiny-lora.safetensors", 0.7]], (("tiny-lora.safetensors", 0.7),))
    assert list(prov["params"]["embeddings"]) == ["tinystyle.safetensors"]
    assert session.settings.models == {"inpaint": "my-inpaint"}      # saved with the form on Generate
    win.close()
