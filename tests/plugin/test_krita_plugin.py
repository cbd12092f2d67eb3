"""The plugin in the full Krita under Xvfb: it loads, registers its docker, actions (Tools menu,
shortcuts from the .action file) and Layers-docker menu entries; actions reach the dock; a result
layer is undone and redone in one step with Krita's own undo."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .krita_support import enable_plugin, install_plugin, run_krita_gui

pytestmark = pytest.mark.krita(gui=True)

DRIVER = Path(__file__).parent / "krita_scripts" / "gui"


@pytest.fixture(scope="module")
def gui_run(tmp_path_factory):
    home = tmp_path_factory.mktemp("krita-gui-home")
    pykrita = install_plugin(home / ".local" / "share" / "krita")
    shutil.copytree(DRIVER / "dd_test_driver", pykrita / "dd_test_driver")
    shutil.copy2(DRIVER / "dd_test_driver.desktop", pykrita / "dd_test_driver.desktop")
    enable_plugin(home)
    out = home / "results.json"
    proc = run_krita_gui(home, out)
    assert out.exists(), f"Krita wrote no results (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
    results = json.loads(out.read_text())
    assert "crash" not in results, results["crash"] + "\n" + proc.stderr[-3000:]
    assert not results.get("timeout"), results
    return results


def test_plugin_loads_with_krita_binding_and_no_generic_modules(gui_run):
    assert gui_run["plugin_loaded"] and gui_run["registered"]
    assert gui_run["binding"] == "PyQt5"
    assert gui_run["generic_modules"] == []


def test_docker_exists(gui_run):
    assert "diffusion_dock" in gui_run["dockers"]
    assert gui_run["dock_found"] and gui_run["dock_panel"] == "DockPanel"


def test_shortcuts_from_action_file_are_registered(gui_run):
    from plugin.diffusion_dock.actions import ACTIONS

    for spec in ACTIONS:
        got = gui_run["actions"][spec.id]
        assert got is not None, spec.id
        assert got["text"] == spec.text
        assert got["shortcut"] == spec.shortcut, spec.id
    assert "Diffusion Dock" in gui_run["tools_entries"]            # Tools › Diffusion Dock › ...
    assert gui_run["tools_submenu"] == [a.id for a in ACTIONS]


def test_actions_are_enabled_on_a_paint_layer(gui_run):
    # Krita reads the .action file's activation flags: without a document only "show" is active.
    before = gui_run["enabled_without_doc"]
    assert before["diffusion_dock_show"] is True
    assert not any(v for k, v in before.items() if k != "diffusion_dock_show"), before
    assert gui_run["active_layer"] == "Background"
    assert all(gui_run["enabled_with_layer"].values()), gui_run["enabled_with_layer"]


def test_actions_show_the_dock_and_set_its_mode(gui_run):
    assert gui_run["show_makes_visible"] is True
    assert gui_run["after_restyle"] == {"history": [["restyle", "menu"]], "mode": "restyle"}


def test_layer_menu_gets_entries_and_other_menus_do_not(gui_run):
    from plugin.diffusion_dock.actions import LAYER_MENU

    assert gui_run["layer_view_found"]
    hook = gui_run["hook"]
    assert hook["failed"] is None and hook["installed"]
    menu = gui_run["layer_menu"]
    assert menu is not None and len(menu) > len(LAYER_MENU)       # Krita's own entries, then ours
    assert menu[-len(LAYER_MENU):] == [a.text for a in LAYER_MENU]
    assert hook["menus_extended"] == 1
    assert gui_run["other_menu"] == ["only entry"]


def test_result_layer_undo_and_redo_in_one_step(gui_run):
    assert gui_run["host_active_layer"] == "Background"
    assert gui_run["with_preview"] == ["[Preview] preview", "Background"]
    assert gui_run["after_apply"] == ["[Fill] (seed 7)", "Background"]
    assert gui_run["after_undo"] == ["Background"]
    assert gui_run["after_redo"] == ["[Fill] (seed 7)", "Background"]
    assert gui_run["provenance_after_redo"]["seed"] == 7
