"""Launching the standalone editor as a program."""

from __future__ import annotations

import os
import subprocess
import sys

from PIL import Image

from ..conftest import ROOT


def run_editor(args, env, timeout=120):
    return subprocess.run([sys.executable, "-m", "plugin.diffusion_dock.editor", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_opens_an_image_and_shows_the_window(tmp_path):
    shot = tmp_path / "editor.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    out = run_editor([str(ROOT / "resources" / "sample.png"), "--screenshot", str(shot)], env)
    assert out.returncode == 0, out.stderr
    with Image.open(shot) as im:
        assert im.size[0] >= 800 and im.size[1] >= 600


def test_without_a_display_it_says_so_and_points_to_the_demo():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    out = run_editor([], env)
    assert out.returncode == 2
    assert "No display found" in out.stderr and "./run.sh" in out.stderr


def test_a_missing_file_is_an_error(tmp_path):
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    out = run_editor([str(tmp_path / "none.ora")], env)
    assert out.returncode == 2 and "none.ora" in out.stderr


def test_switching_documents_then_exiting_is_clean():
    """Documents replaced in a window, then the interpreter exits with everything alive: no slot may
    run on a half-destroyed undo stack (PyQt aborts the process on such errors)."""
    code = ("from plugin.diffusion_dock.runtime.qt import QtWidgets\n"
            "app = QtWidgets.QApplication([])\n"
            "from plugin.diffusion_dock.editor.window import EditorWindow\n"
            "w = EditorWindow(); w.show()\n"
            "w.open_path('resources/sample.png'); w.document.add_layer(); w.document.select_all()\n"
            "w.open_path('resources/sample_mask.png'); w.document.add_layer()\n"
            "app.processEvents()\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr


def test_unexpected_errors_are_reported_not_fatal(qtbot, editor_window, monkeypatch, capsys):
    from plugin.diffusion_dock.editor.__main__ import install_excepthook

    monkeypatch.setattr(sys, "excepthook", sys.excepthook)      # restored after the test
    install_excepthook(editor_window)
    try:
        raise ValueError("boom")
    except ValueError as e:
        sys.excepthook(type(e), e, e.__traceback__)
    assert editor_window.statusBar().currentMessage() == "Internal error: ValueError: boom"
    assert "ValueError: boom" in capsys.readouterr().err


def test_select_from_image_makes_the_starting_selection(qtbot):
    """What ./run.sh opens: the sample with its red ball selected (not an undo step, not a change)."""
    from plugin.diffusion_dock.editor import pixels
    from plugin.diffusion_dock.editor.__main__ import parse_args, select_from_image
    from plugin.diffusion_dock.editor.window import EditorWindow

    args = parse_args([str(ROOT / "resources" / "sample.png"), "--select", str(ROOT / "resources" / "sample_mask.png")])
    window = EditorWindow()
    window.confirm_close = False
    qtbot.addWidget(window)
    assert window.open_path(args.image)
    assert select_from_image(window, args.select)
    doc = window.document
    with Image.open(ROOT / "resources" / "sample_mask.png") as im:
        box = im.convert("L").getbbox()
    b = pixels.nonzero_bounds(doc.selection)
    assert (b.x, b.y, b.x + b.w, b.y + b.h) == box
    assert not doc.undo_stack.canUndo() and not doc.modified
    assert not select_from_image(window, ROOT / "resources" / "missing.png")
