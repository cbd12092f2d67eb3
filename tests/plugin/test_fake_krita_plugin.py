"""The plugin's Krita registration on the fake Krita under PyQt6 (the Krita 6 stand-in), in this
process, and the same scenario on PyQt5 (the system Python): start-up (extension set up, docker, actions, Tools submenu, layer-menu hook), the dock
following views and selections the way Krita signals them, actions reaching the dock, and results
undone/redone in one step each.  The same facts on real Krita 5.1.5: tests/plugin/test_krita_plugin.py."""

from __future__ import annotations

from plugin.diffusion_dock.panel.actions import ACTIONS


def test_start_up_registers_extension_docker_and_actions(fake_krita_plugin):
    r = fake_krita_plugin
    assert r["qt"] == "PyQt6"
    assert r["extensions"] == ["DiffusionDockExtension"]          # register() twice: once
    assert r["dock"] == ["DiffusionDockWidget", "DockPanel"]
    assert r["hook"] == [True, None]                              # setup() installed the layer-menu hook
    assert all(r["actions"].values()), r["actions"]
    assert r["tools_submenu"] == [a.id for a in ACTIONS]
    assert r["signals"]["windowCreated"] == 1


def test_dock_position_is_the_scoped_enum_on_pyqt6(fake_krita_plugin):
    assert fake_krita_plugin["dock_right"] == "<DockPosition.DockRight: 3>"


def test_dock_follows_views_and_documents(fake_krita_plugin):
    r = fake_krita_plugin
    assert r["context_without_document"] == "No document open."
    assert r["context_first"].startswith("Layer: Background (RGB 8-bit")
    assert r["context_second"].startswith("Layer: Background (RGB 32-bit float")
    assert r["context_back"] == r["context_first"]
    assert r["signals"]["viewCreated"] == 2
    assert r["signals"]["activeViewChanged"] == 4        # two new views, one switch back, the last one closed
    assert r["signals"]["canvases"] == ["first", "second", "first", None]
    assert r["context_after_close"] == "No document open."


def test_dock_notices_selections_by_looking(fake_krita_plugin):
    """Krita has no signal for a changed selection: the docker looks on a timer."""
    r = fake_krita_plugin
    assert r["looked_without_change"] is False
    assert r["context_before_look"] == r["context_first"]         # nothing told the dock
    assert r["looked_after_selection"] is True
    assert "selection 22×18 at 20,12" in r["context_after_selection"]
    assert "no selection" in r["context_after_deselect_by_timer"]


def test_actions_reach_the_dock(fake_krita_plugin):
    assert fake_krita_plugin["after_restyle"] == [[("restyle", "menu")], "restyle"]


def test_result_layer_undo_and_redo_in_one_step(fake_krita_plugin):
    r = fake_krita_plugin
    assert r["with_preview"] == ["[Preview] preview", "Background"]
    assert r["after_apply"] == ["[Fill] Patches", "Background"]
    assert r["after_undo"] == ["Background"]
    assert r["after_redo"] == ["[Fill] Patches", "Background"]
    assert r["provenance_after_redo"]["seed"] == 7


def test_expand_undo_takes_two_steps_layer_then_canvas(fake_krita_plugin):
    """As in real Krita 5.1.5 (test_krita_plugin.py): the resize and the result layer are two undo steps."""
    from .test_krita_plugin import check_expand_undo

    check_expand_undo(fake_krita_plugin)


def test_same_scenario_on_pyqt5(fake_krita_plugin, tmp_path):
    """The registration scenario again on PyQt5 (the system Python, the fake posing as Krita 5.1.5):
    the same observations as on PyQt6."""
    import importlib.util
    import json
    import os
    import shutil
    import subprocess
    from pathlib import Path

    from ..conftest import ROOT
    from .conftest import require
    from .test_qt_shim import SYSTEM_PYTHON

    require(os.path.exists(SYSTEM_PYTHON) and subprocess.run(
        [SYSTEM_PYTHON, "-c", "import PyQt5.QtWidgets"], capture_output=True).returncode == 0,
        "system python3 with PyQt5 is missing (apt-get install python3-pyqt5)")
    vendor = tmp_path / "vendor"                       # qasync alone (the venv's site-packages hold PyQt6)
    shutil.copytree(Path(importlib.util.find_spec("qasync").submodule_search_locations[0]), vendor / "qasync")
    code = ("import json, sys\n"
            "from plugin.diffusion_dock.runtime.qt import QtWidgets\n"
            "app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])\n"
            "from tests.plugin.fake_plugin_run import run\n"
            "r = run(app)\n"
            "r.pop('calls')\n"
            "print(json.dumps(r, default=str))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "DD_QT_API")}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), str(vendor)]), QT_QPA_PLATFORM="offscreen",
               DD_QT_API="pyqt5", FAKE_KRITA_QT="5", FAKE_KRITA_VERSION="5.1.5")
    for key in ("DD_CONFIG_DIR", "DD_RESULTS_DIR", "DD_CACHE_DIR", "DD_LOG_DIR", "DD_MODELS_DIR"):
        env[key] = str(tmp_path / key.lower())
    proc = subprocess.run([SYSTEM_PYTHON, "-c", code], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    on5 = json.loads(proc.stdout.strip().splitlines()[-1])
    on6 = json.loads(json.dumps({k: v for k, v in fake_krita_plugin.items() if k != "calls"}, default=str))
    assert on5.pop("qt") == "PyQt5" and on6.pop("qt") == "PyQt6"
    for r in (on5, on6):                               # made at run time: a date, a layer's UUID
        r["provenance_after_redo"].pop("created")
        r["provenance_after_redo"]["source_layer"].pop("id")
    assert on5 == on6
