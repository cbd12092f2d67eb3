"""The Qt binding choice: Krita's own Qt inside Krita (never probing PyQt6 there), PyQt6 first
outside; and the same Qt6-style code running for real on PyQt6 (venv) and PyQt5 (system python3)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from plugin.diffusion_dock.runtime import qt

from ..conftest import ROOT
from .conftest import require

SYSTEM_PYTHON = "/usr/bin/python3"


def never(name):
    raise AssertionError(f"probed {name} inside Krita")


@pytest.mark.parametrize("major, expected", [(None, "PyQt5"), (5, "PyQt5"), (6, "PyQt6")])
def test_inside_krita_the_binding_follows_krita_and_nothing_is_probed(major, expected):
    assert qt.choose_binding(True, major, never) == expected
    assert qt.choose_binding(True, major, never, override="pyqt6") == expected   # override ignored


@pytest.mark.parametrize("installed, expected", [
    ({"PyQt6", "PyQt5"}, "PyQt6"), ({"PyQt6"}, "PyQt6"), ({"PyQt5"}, "PyQt5")])
def test_outside_krita_pyqt6_is_preferred(installed, expected):
    assert qt.choose_binding(False, None, installed.__contains__) == expected


def test_outside_krita_override_and_missing_bindings():
    both = {"PyQt6", "PyQt5"}.__contains__
    assert qt.choose_binding(False, None, both, override="PyQt5") == "PyQt5"
    with pytest.raises(ImportError, match="pyqt6 or pyqt5"):
        qt.choose_binding(False, None, both, override="pyside6")
    with pytest.raises(ImportError, match="not installed"):
        qt.choose_binding(False, None, {"PyQt6"}.__contains__, override="pyqt5")
    with pytest.raises(ImportError, match="PyQt6 or PyQt5"):
        qt.choose_binding(False, None, lambda name: False)


def test_krita_qt_major_reads_pykrita(monkeypatch):
    assert qt.krita_qt_major() == (False, None)                       # not in Krita here
    monkeypatch.setitem(sys.modules, "pykrita", types.SimpleNamespace())
    assert qt.krita_qt_major() == (True, None)                        # Krita 5.1: no qt_major_version
    monkeypatch.setitem(sys.modules, "pykrita", types.SimpleNamespace(qt_major_version=lambda: 6))
    assert qt.krita_qt_major() == (True, 6)
    monkeypatch.setitem(sys.modules, "pykrita", types.SimpleNamespace(qt_major_version=lambda: 1 / 0))
    assert qt.krita_qt_major() == (True, None)


def test_venv_runs_on_pyqt6_with_moved_classes():
    assert qt.BINDING == "PyQt6" and qt.QT_MAJOR == 6 and not qt.INSIDE_KRITA
    assert qt.QAction is qt.QtGui.QAction and qt.QUndoStack is qt.QtGui.QUndoStack
    assert qt.QShortcut is qt.QtGui.QShortcut


def test_fake_krita_5_with_pyqt6_installed_never_loads_pyqt6(tmp_path):
    """The crash of krita.md: in Krita 5 a system PyQt6 must not be imported.  Simulated with a
    fake ``pykrita`` (no qt_major_version) in this venv, which has PyQt6 but no PyQt5."""
    (tmp_path / "pykrita.py").write_text("")
    code = textwrap.dedent("""
        import sys
        try:
            import diffusion_dock.runtime.qt
        except ImportError as e:
            print("ImportError", e)
        print("PyQt6" in sys.modules)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT / "plugin")]),
           "DD_QT_API": "pyqt6", "QT_API": "pyqt6"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("ImportError") and "PyQt5" in lines[0]
    assert lines[-1] == "False"


def test_same_code_runs_on_pyqt5_from_system_python(tmp_path):
    """Qt6-style code (scoped enums, exec(), moved classes) on PyQt5 for real: the shim, the dock
    panel, the layer-menu hook, the editor's document, selections and an .ora round trip."""
    require(os.path.exists(SYSTEM_PYTHON) and subprocess.run(
        [SYSTEM_PYTHON, "-c", "import PyQt5.QtWidgets"], capture_output=True).returncode == 0,
        "system python3 with PyQt5 is missing (apt-get install python3-pyqt5)")
    code = textwrap.dedent(f"""
        import sys
        from diffusion_dock.runtime import qt
        assert qt.BINDING == "PyQt5" and qt.QT_MAJOR == 5, qt.BINDING
        app = qt.QtWidgets.QApplication([])
        from diffusion_dock.panel.dock import DockPanel
        from diffusion_dock.krita.layer_menu import LayerMenuHook
        from diffusion_dock.editor.document import EditorDocument
        from diffusion_dock.editor.selection import Combine, ellipse_mask, rect_mask
        from diffusion_dock.editor import fileio
        from diffusion_dock.editor.host import EditorHostDocument
        from diffusion_dock.runtime.coreapi import jobs, qasync
        panel = DockPanel(); panel.set_mode("restyle"); assert panel.mode == "restyle"
        hook = LayerMenuHook(lambda: []); assert hook.install()
        doc = EditorDocument.new(40, 30)
        doc.apply_selection(rect_mask(doc.size, qt.QRectF(2, 3, 10, 5)), Combine.REPLACE)
        doc.apply_selection(ellipse_mask(doc.size, qt.QRectF(20, 10, 10, 10)), Combine.ADD)
        assert doc.selection_bounds().as_tuple()[:2] == (2, 3), doc.selection_bounds()
        h = EditorHostDocument(doc)
        src = doc.layers[0].id
        info = h.add_result_layer(src, jobs.Patch(1, 2, jobs.ImageBuffer(3, 2, "BGRA_U8", bytes(range(24))), 5),
                                  "r", {{"mode": "fill"}})
        doc.undo_stack.undo(); assert len(doc.layers) == 1
        doc.undo_stack.redo(); assert len(doc.layers) == 2
        fileio.save_document(doc, {str(tmp_path / "q5.ora")!r})
        back = fileio.open_document({str(tmp_path / "q5.ora")!r})
        assert h.read_pixels(info.id, h.layers()[0].bounds).data == bytes(range(24))
        assert [l.name for l in back.layers] == ["r", "Background"]
        box = qt.QtWidgets.QMessageBox()
        assert hasattr(box, "exec")
        assert qasync().QtModuleName == "PyQt5"
        qt.QTimer.singleShot(0, app.quit)     # the way out a host takes: the hook leaves with aboutToQuit
        app.exec()
        assert not hook.installed
        print("ok")
    """)
    # qasync alone (not the venv's site-packages, which hold PyQt6).
    vendor = tmp_path / "vendor"
    shutil.copytree(Path(importlib.util.find_spec("qasync").submodule_search_locations[0]), vendor / "qasync")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT / "plugin"), str(vendor)]), QT_QPA_PLATFORM="offscreen")
    out = subprocess.run([SYSTEM_PYTHON, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stdout + out.stderr
