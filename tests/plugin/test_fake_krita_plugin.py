"""The plugin's Krita registration on the fake Krita under PyQt6 (the Krita 6 stand-in), in this
process: start-up (extension set up, docker, actions, Tools submenu, layer-menu hook), the dock
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
    assert r["after_apply"] == ["[Fill] OpenCV", "Background"]
    assert r["after_undo"] == ["Background"]
    assert r["after_redo"] == ["[Fill] OpenCV", "Background"]
    assert r["provenance_after_redo"]["seed"] == 7
