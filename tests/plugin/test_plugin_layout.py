"""The plugin's files and installed form: .desktop, .action (ids, texts, shortcuts as in
actions.py, no clash with Krita's defaults, documented in the README), a self-contained installed
package, the source-checkout fallback, and the controller the actions call."""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from plugin.diffusion_dock.panel import actions as A
from plugin.diffusion_dock.panel.controller import PanelController
from plugin.diffusion_dock.panel.dock import DockPanel
from plugin.diffusion_dock.runtime import coreapi
from plugin.diffusion_dock.runtime.qt import Qt, QtGui, QtWidgets

from ..conftest import ROOT
from .krita_support import install_plugin

PLUGIN = ROOT / "plugin"
KRITA_SHARE = Path("/usr/share/krita")


def action_file_entries():
    root = ET.parse(PLUGIN / "diffusion_dock.action").getroot()
    return {a.get("name"): {child.tag: (child.text or "") for child in a} for a in root.iter("Action")}


def test_desktop_file_names_the_package():
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.optionxform = str
    cfg.read(PLUGIN / "diffusion_dock.desktop")
    entry = cfg["Desktop Entry"]
    assert entry["Type"] == "Service" and entry["ServiceTypes"] == "Krita/PythonPlugin"
    assert entry["X-KDE-Library"] == "diffusion_dock" and (PLUGIN / "diffusion_dock" / "__init__.py").exists()
    assert entry["X-Python-2-Compatible"] == "false" and entry["Name"] and entry["Comment"]
    assert (PLUGIN / "diffusion_dock" / entry["X-Krita-Manual"]).exists()


def test_action_file_matches_actions_module():
    entries = action_file_entries()
    assert list(entries) == [a.id for a in A.ACTIONS]
    for spec in A.ACTIONS:
        e = entries[spec.id]
        assert e["text"] == spec.text and e["shortcut"] == spec.shortcut and e["toolTip"] == spec.tooltip
        assert e["activationFlags"] == spec.activation and set(e["activationFlags"]) <= {"0", "1"}
    shortcuts = [a.shortcut for a in A.ACTIONS if a.shortcut]
    assert len(shortcuts) == len(set(shortcuts))
    for s in shortcuts:
        assert QtGui.QKeySequence(s).toString() == s              # Qt parses each one
    assert (PLUGIN / "diffusion_dock.action").read_text(encoding="utf-8") == A.action_file()


def test_every_mode_has_an_action_from_the_mode_table():
    from core.contract import modes

    by_mode = {a.mode: a for a in A.ACTIONS if a.mode}
    assert list(by_mode) == list(modes.MODES)
    for m in modes.MODE_TABLE:
        assert by_mode[m.key].text == m.action.text and by_mode[m.key].layer_menu == m.action.layer_menu


def _krita_default_shortcuts() -> set[str]:
    found = set()
    for f in list((KRITA_SHARE / "actions").glob("*.action")) + list((KRITA_SHARE / "shortcuts").glob("*")):
        text = f.read_text(errors="replace")
        found.update(re.findall(r"<shortcut>([^<]+)</shortcut>", text))
        found.update(v for line in text.splitlines() if "=" in line for v in line.split("=", 1)[1].split(";"))
    return {QtGui.QKeySequence(s.strip()).toString() for s in found if s.strip()}


def test_default_shortcuts_do_not_clash_with_krita():
    if not (KRITA_SHARE / "actions").is_dir():
        pytest.skip("Krita's action files are not installed")
    taken = _krita_default_shortcuts()
    assert "Ctrl+Alt+Shift+C" in taken                            # the scan does see Krita's shortcuts
    ours = {a.shortcut for a in A.ACTIONS if a.shortcut}
    assert not ours & taken


def test_readme_documents_every_shortcut():
    readme = (ROOT / "README.md").read_text()
    for spec in A.ACTIONS:
        if spec.shortcut:
            assert spec.shortcut in readme, spec.shortcut


def test_install_layout_is_self_contained(tmp_path):
    pykrita = install_plugin(tmp_path)
    assert sorted(p.name for p in pykrita.iterdir()) == ["diffusion_dock", "diffusion_dock.desktop"]
    assert (tmp_path / "actions" / "diffusion_dock.action").exists()
    pkg = pykrita / "diffusion_dock"
    from core import PURE_PACKAGES

    assert {"__init__.py", *PURE_PACKAGES} == {p.name for p in (pkg / "_core").iterdir()}
    assert (pkg / "vendor" / "qasync" / "__init__.py").exists()
    assert not list(pkg.rglob("__pycache__"))
    assert not (pkg / "editor").exists()          # the standalone editor stays out of Krita


def test_installed_package_imports_relatively_and_puts_no_generic_names_on_the_path(tmp_path):
    """Outside Krita but in the installed form: _core and the vendored qasync are used, and no
    top-level ``core``, ``qasync`` or ``plugin`` module appears (-I: no user site, no PYTHONPATH)."""
    pykrita = install_plugin(tmp_path)
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(pykrita)!r})
        from diffusion_dock.runtime import coreapi, qt
        from diffusion_dock import host
        from diffusion_dock.panel import dock, controller, actions
        from diffusion_dock.krita import layer_menu
        q = coreapi.qasync()
        print(coreapi.INSTALLED, coreapi.core.__name__, q.__name__, qt.BINDING)
        print(sorted(m for m in ("core", "qasync", "plugin") if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.strip().splitlines()
    assert first == "True diffusion_dock._core diffusion_dock.vendor.qasync PyQt6"
    assert second == "[]"


def test_source_checkout_uses_the_repository_core():
    assert coreapi.INSTALLED is False
    assert Path(coreapi.core.__file__).resolve() == ROOT / "core" / "__init__.py"
    assert coreapi.load("contract.jobs") is coreapi.jobs
    with pytest.raises(ImportError):
        coreapi.load("no_such_module")
    assert coreapi.qasync().QtModuleName == "PyQt6"


def test_controller_shows_the_dock_and_sets_its_mode(qtbot):
    window = QtWidgets.QMainWindow()
    qtbot.addWidget(window)
    dock = QtWidgets.QDockWidget("Diffusion Dock", window)
    panel = DockPanel()
    dock.setWidget(panel)
    window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
    window.show()
    qtbot.waitExposed(window)
    ctrl = PanelController()
    ctrl.register(panel)
    dock.hide()
    ctrl.trigger("diffusion_dock_show")
    assert dock.isVisible() and ctrl.history == []
    ctrl.trigger("diffusion_dock_upscale", "layer_menu")
    assert panel.mode == "upscale" and ctrl.history == [("upscale", "layer_menu")]
    with pytest.raises(ValueError, match="unknown mode"):
        panel.set_mode("paint")
    with pytest.raises(KeyError):
        ctrl.trigger("nope")


def test_editor_menu_offers_the_same_actions(qtbot, editor_window):
    got = {i: (a.text(), a.shortcut().toString()) for i, a in editor_window.diffusion_actions.items()}
    assert got == {a.id: (a.text, a.shortcut) for a in A.ACTIONS}
    editor_window.diffusion_actions["diffusion_dock_fill"].trigger()
    assert editor_window.panel.mode == "fill"
    assert editor_window.controller.history[-1] == ("fill", "menu")
