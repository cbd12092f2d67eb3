"""The Qt 5 / Qt 6 pitfalls of DEVELOPERS.md, enforced on the plugin (and the fake Krita) by reading
their source: code that runs on PyQt5 (Krita 5) and PyQt6 (Krita 6, the editor) alike.

- Every attribute path on a Qt name (``Qt.AlignmentFlag.AlignLeft``, ``QtWidgets.QMenu``, ``QEvent.Type.Show``)
  resolves on PyQt6 (this venv) and on PyQt5 (the system Python): this catches unscoped enums
  (``Qt.AlignLeft``), classes that moved (``QtWidgets.QAction``), were removed (``QtCore.QRegExp``,
  ``QtWidgets.QDesktopWidget``) or are new in Qt 6 (``QtGui.QAction``).
- Qt and sip come from ``runtime/qt.py`` only; no ``exec_``/``print_``; no ``QRegExp``, ``QDesktopWidget``,
  ``QApplication.desktop()`` or high-DPI application attributes; a mouse event's position through
  ``runtime.qt.event_pos`` (Qt 6 has ``position()``, Qt 5 ``localPos()``); no ``.value`` on a Qt enum
  (PyQt5's are ints without it) and ``int()`` only of enums that are ints in PyQt6.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import subprocess
from pathlib import Path

import pytest

from plugin.diffusion_dock.runtime import qt

from ..conftest import ROOT
from .conftest import require

SHIM = ROOT / "plugin" / "diffusion_dock" / "runtime" / "qt.py"
FILES = sorted(p for p in [*ROOT.glob("plugin/diffusion_dock/**/*.py"), *ROOT.glob("tests/fake_krita/**/*.py")]
               if "vendor" not in p.parts and "_core" not in p.parts and p != SHIM)
QT_NAMES = {"Qt", "QtCore", "QtGui", "QtWidgets"} | {n for n in dir(qt) if n.startswith("Q")}
REMOVED = {"QRegExp", "QDesktopWidget", "AA_EnableHighDpiScaling", "AA_DisableHighDpiScaling", "AA_UseHighDpiPixmaps",
           "QSound", "QMatrix"}
POSITION_CALLS = {"pos", "posF", "localPos", "windowPos", "screenPos", "globalPos", "globalPosF", "x", "y",
                  "globalX", "globalY"}
MOUSE_HANDLERS = {"mousePressEvent", "mouseMoveEvent", "mouseReleaseEvent", "mouseDoubleClickEvent",
                  "wheelEvent", "tabletEvent"}


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def chain(node: ast.AST) -> list[str] | None:
    """``a.b.c`` as ["a", "b", "c"], when it is a pure attribute path on a name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *reversed(parts)]
    return None


def qt_paths(tree: ast.AST) -> set[tuple[str, ...]]:
    """Attribute paths rooted at a Qt name this file imported from the shim (longest paths only)."""
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.endswith("qt"):
            imported |= {a.asname or a.name for a in node.names if (a.asname or a.name) in QT_NAMES}
    inner = set()
    paths = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and id(node) not in inner:
            c = chain(node)
            if c and c[0] in imported and len(c) > 1:
                paths.add(tuple(c))
                sub = node.value
                while isinstance(sub, ast.Attribute):
                    inner.add(id(sub))
                    sub = sub.value
    return paths


def resolve(namespace, path) -> bool:
    obj = namespace
    for part in path:
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
        if not isinstance(obj, type) and type(obj).__name__ not in ("module", "sip.wrappertype", "EnumType",
                                                                     "EnumMeta", "wrappertype", "sip.enumtype"):
            return True        # a member, a method or a function: the rest is not a static path
    return True


def all_paths() -> dict[tuple[str, ...], list[str]]:
    out: dict[tuple[str, ...], list[str]] = {}
    for path in FILES:
        for p in qt_paths(ast.parse(path.read_text())):
            out.setdefault(p, []).append(rel(path))
    return out


def test_qt_paths_resolve_on_pyqt6():
    assert qt.BINDING == "PyQt6"
    bad = {".".join(p): files for p, files in all_paths().items() if not resolve(qt, p)}
    assert bad == {}


def test_qt_paths_resolve_on_pyqt5(tmp_path):
    require(os.path.exists("/usr/bin/python3") and subprocess.run(
        ["/usr/bin/python3", "-c", "import PyQt5.QtWidgets"], capture_output=True).returncode == 0,
        "system python3 with PyQt5 is missing (apt-get install python3-pyqt5)")
    paths = sorted(all_paths())
    code = ("import json, sys\nfrom diffusion_dock.runtime import qt\nassert qt.BINDING == 'PyQt5', qt.BINDING\n"
            + inspect.getsource(resolve)
            + "print(json.dumps([p for p in json.load(sys.stdin) if not resolve(qt, p)]))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "DD_QT_API")}
    env["PYTHONPATH"] = str(ROOT / "plugin")
    proc = subprocess.run(["/usr/bin/python3", "-c", code], input=json.dumps(paths), capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def findings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        where = f"{rel(path)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module
                                                   else [])
            if any(n and (n.split(".")[0] in ("PyQt5", "PyQt6", "PySide2", "PySide6", "sip")) for n in names):
                out.append(f"{where}: Qt or sip imported directly (use runtime/qt.py)")
        if isinstance(node, ast.Attribute) and node.attr in ("exec_", "print_"):
            out.append(f"{where}: {node.attr} (use exec()/print())")
        if isinstance(node, ast.Attribute) and node.attr == "desktop" and isinstance(getattr(node, "ctx", None), ast.Load):
            out.append(f"{where}: QApplication.desktop() is gone in Qt 6 (use QScreen)")
        name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
        if name in REMOVED:
            out.append(f"{where}: {name} does not exist in Qt 6")
        if isinstance(node, ast.Attribute) and node.attr == "value":
            c = chain(node.value)
            if c and c[0] in QT_NAMES and len(c) >= 3:
                out.append(f"{where}: .value of a Qt enum (PyQt5 enums are ints without it)")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "int" and node.args:
            for sub in ast.walk(node.args[0]):
                c = chain(sub) if isinstance(sub, ast.Attribute) else None
                if c and c[0] in QT_NAMES and len(c) >= 3 and resolve(qt, c):
                    member = qt
                    for part in c:
                        member = getattr(member, part)
                    if not isinstance(member, int):
                        out.append(f"{where}: int() of {'.'.join(c)}, not an int in PyQt6")
        if isinstance(node, ast.FunctionDef) and node.name in MOUSE_HANDLERS and len(node.args.args) >= 2:
            event = node.args.args[1].arg
            for sub in ast.walk(node):
                if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) and \
                        sub.func.attr in POSITION_CALLS and isinstance(sub.func.value, ast.Name) and \
                        sub.func.value.id == event:
                    out.append(f"{rel(path)}:{sub.lineno}: {event}.{sub.func.attr}() in {node.name} "
                               f"(use runtime.qt.event_pos: position() in Qt 6, localPos() in Qt 5)")
    return out


@pytest.mark.parametrize("path", FILES, ids=rel)
def test_no_qt5_only_or_qt6_only_code(path):
    assert findings(path) == []


def test_the_lint_finds_what_it_is_for(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from PyQt5.QtWidgets import QAction\nimport sip\nfrom x.qt import Qt, QtCore, QtWidgets\n"
                   "m.exec_()\nQtWidgets.QApplication.desktop()\nr = QtCore.QRegExp('a')\n"
                   "Qt.ApplicationAttribute.AA_EnableHighDpiScaling\nv = Qt.AlignmentFlag.AlignLeft.value\n"
                   "class W:\n    def mousePressEvent(self, e):\n        p = e.pos()\n")
    found = findings(bad)
    for what in ("imported directly", "exec_", "desktop()", "QRegExp", "AA_EnableHighDpiScaling", ".value",
                 "e.pos() in mousePressEvent"):
        assert any(what in f for f in found), (what, found)
    paths = qt_paths(ast.parse(bad.read_text()))
    assert ("Qt", "ApplicationAttribute", "AA_EnableHighDpiScaling") in paths
    assert not resolve(qt, ("QtWidgets", "QAction")) and resolve(qt, ("QAction",))
    assert not resolve(qt, ("Qt", "AlignLeft")) and resolve(qt, ("Qt", "AlignmentFlag", "AlignLeft"))
