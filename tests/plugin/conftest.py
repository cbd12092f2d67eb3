"""Fixtures of the plugin and editor tests.

Tests marked ``krita`` need the real Krita from apt (``krita``/``kritarunner``; with
``@pytest.mark.krita(gui=True)`` also ``xvfb-run``).  Without them they are skipped, except under
``CI=true``, where a skip would hide a broken CI machine: there it is a failure.
"""

from __future__ import annotations

import os
import shutil

import pytest

CI = os.environ.get("CI", "").strip().lower() == "true"


def require(condition, reason: str) -> None:
    """Skip (or, under CI=true, fail) unless ``condition`` holds."""
    if condition:
        return
    if CI:
        pytest.fail(f"{reason} -- under CI=true this is a failure, not a skip")
    pytest.skip(reason)


def pytest_runtest_setup(item):
    marker = item.get_closest_marker("krita")
    if marker is None:
        return
    require(shutil.which("kritarunner") and shutil.which("krita"),
            "Krita is not installed (apt-get install krita python3-pyqt5 xvfb xauth)")
    if marker.kwargs.get("gui"):
        require(shutil.which("xvfb-run"), "xvfb-run is not installed (apt-get install xvfb xauth)")


@pytest.fixture(scope="session")
def krita_home(tmp_path_factory):
    """One HOME for every kritarunner run of the session: Krita builds its resource database on
    the first run (about 15 s), later runs reuse it (about 1 s)."""
    return tmp_path_factory.mktemp("krita-home")


@pytest.fixture
def editor_doc():
    from plugin.diffusion_dock.editor.document import EditorDocument

    return EditorDocument.new(120, 90, "test")


@pytest.fixture
def canvas(qtbot, editor_doc):
    """A canvas at zoom 2 with the image origin at widget (5, 7): widget = image * 2 + (5, 7)."""
    from plugin.diffusion_dock.editor.canvas import CanvasView
    from plugin.diffusion_dock.qt import QPointF

    view = CanvasView(editor_doc)
    qtbot.addWidget(view)
    view.resize(400, 300)
    view.show()
    qtbot.waitExposed(view)
    view.set_view(2.0, QPointF(5, 7))
    return view


@pytest.fixture
def editor_window(qtbot):
    from plugin.diffusion_dock.editor.document import EditorDocument
    from plugin.diffusion_dock.editor.window import EditorWindow

    window = EditorWindow(EditorDocument.new(120, 90, "test"))
    window.confirm_close = False
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    return window
