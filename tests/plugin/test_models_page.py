"""The dock's models page: the installer's ``models list/download/remove/import`` as child processes (this
Python as the engine's), against the fake hub: list, Download with progress, Remove with the space freed,
Import a single-file fine-tune (configs fetched from the hub, no weights) and the question a 4-channel
file without metadata needs."""

from __future__ import annotations

import sys

import pytest

from ..test_checkpoint import write
from ..test_installer_setup import hub_env, tiny_hub
from .dock_util import ROOT, spin_until


@pytest.fixture
def page(qapp, tmp_path, tiny_root):
    from plugin.diffusion_dock.panel.models_page import ModelsPage

    hub, handle = tiny_hub(tiny_root)
    p = ModelsPage(sys.executable, str(ROOT), env=hub_env(tmp_path, handle.url))
    p.changed_count = 0
    p.changed.connect(lambda: setattr(p, "changed_count", p.changed_count + 1))
    yield p
    handle.stop()


def settle(page, timeout=300):
    spin_until(lambda: (page.run is None or not page.run.running) and page.list_run is not None
               and page.list_run.exit_code is not None, timeout, "the models page")


def state(page, key):
    return {r["key"]: r for r in page.rows}.get(key)


def test_download_then_remove(page, tmp_path):
    page.refresh()
    settle(page)
    assert {"sd2-inpainting", "sd2-1", "sd2-depth"} <= {r["key"] for r in page.rows}
    assert not state(page, "sd2-inpainting")["installed"]
    page.button("sd2-inpainting").click()
    spin_until(lambda: page.run is not None and page.run.exit_code is not None, 300, "the download")
    assert page.run.files and all(f.done == f.total for f in page.run.files.values())
    settle(page)
    assert page.message.text() == "sd2-inpainting is installed." and page.changed_count == 1
    row = state(page, "sd2-inpainting")
    assert row["installed"] and row["bytes"] > 0 and page.button("sd2-inpainting").text() == "Remove"
    page.button("sd2-inpainting").click()
    spin_until(lambda: page.run.exit_code is not None, 120, "the removal")
    settle(page)
    assert page.message.text() == f"sd2-inpainting removed: {row['bytes'] / 1e6:.1f} MB freed."
    assert not state(page, "sd2-inpainting")["installed"] and page.changed_count == 2
    assert not list((tmp_path / "hf").glob("models--*inpainting*"))


def test_import_a_fine_tune_fetching_its_configs(page, tmp_path, tiny_root):
    from safetensors.torch import save_file

    from ..ldm_layout import pipeline_to_ldm

    f = tmp_path / "dreamy-inpaint.safetensors"
    save_file({k: v.contiguous() for k, v in pipeline_to_ldm(tiny_root / "sd2-inpainting").items()}, str(f))
    page.ask_name = lambda default: default + "-v1"
    page.import_file(str(f))
    spin_until(lambda: page.run.exit_code is not None, 300, "the import")
    settle(page)
    assert page.message.text().startswith("dreamy-inpaint-v1 is imported"), (page.message.text(), page.run.log[-5:])
    assert state(page, "dreamy-inpaint-v1")["installed"]
    assert (tmp_path / "models" / "dreamy-inpaint-v1" / "model_index.json").is_file()


def test_a_file_that_does_not_say_its_prediction_is_asked(page, tmp_path):
    asked = []
    page.ask_prediction = lambda question: asked.append(question) or "v"
    page.import_file(str(write(tmp_path / "t.safetensors")), "mine")
    spin_until(lambda: asked and page.run.exit_code is not None and "--prediction" in " ".join(
        page.run.proc.arguments()), 120, "the second import")
    settle(page)
    assert "v-prediction" in asked[0] or "predicts v" in asked[0]
    # answered v: it is 2-1, whose configs this hub does not have: said in one line
    assert "sd2-1" in page.message.text() and "Traceback" not in page.message.text()
