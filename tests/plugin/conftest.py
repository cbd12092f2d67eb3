"""Fixtures of the plugin and editor tests.

The ``krita`` marker's rule (skip without Krita, fail under CI=true) lives in tests/conftest.py.
"""

from __future__ import annotations

import pytest

from ..conftest import CI, require  # noqa: F401  (re-exported for the plugin tests)


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
    from plugin.diffusion_dock.runtime.qt import QPointF

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


@pytest.fixture(scope="session")
def fake6_run(tmp_path_factory, models):
    """The Krita host suite's script on the fake Krita under PyQt6 (one run per session: the host tests
    and the .sip check of the calls it made share it)."""
    from .host_runs import run_place

    return run_place("fake-qt6", tmp_path_factory, models)


@pytest.fixture(scope="session")
def fake_krita_plugin(qapp):
    """The plugin registered in the fake Krita in this process, after a scenario of views, selections,
    actions and undo (tests/plugin/fake_plugin_run.py): its observations."""
    from .fake_plugin_run import run

    return run(qapp)
