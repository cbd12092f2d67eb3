"""The dock's pages: the form (page 0), the setup page and the models page, made when first opened.

The setup page opens by itself when no engine environment exists; both are in the dock's menu
(*Setup and repair…*, *Models…*).  After an install or a model change the engine is restarted so
that its list of models (its capabilities) is new.
"""

from __future__ import annotations

from typing import Any

from ..runtime.qt import QtWidgets
from ..session.settings import EngineNotFound, find_local_engine


def scrolled(widget) -> QtWidgets.QScrollArea:
    scroll = QtWidgets.QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QtWidgets.QFrame.Shape.NoFrame)
    scroll.setWidget(widget)
    return scroll


class DockPages(QtWidgets.QStackedWidget):
    def __init__(self, panel):
        super().__init__()
        self.panel = panel
        self.setup_page: Any = None       # setup_page.SetupPage
        self.models_page: Any = None      # models_page.ModelsPage
        self._index: dict[str, int] = {}

    def show_form(self) -> None:
        self.setCurrentIndex(0)

    def _show(self, name: str, widget) -> None:
        if name not in self._index:
            self._index[name] = self.addWidget(scrolled(widget))
        self.setCurrentIndex(self._index[name])

    def open_setup(self) -> None:
        if self.setup_page is None:
            from .setup_page import SetupPage

            self.setup_page = SetupPage(**self.panel.session.setup_options)
            self.setup_page.installed.connect(self._setup_done)
            self.setup_page.closed.connect(self.show_form)
        self._show("setup", self.setup_page)
        self.setup_page.refresh_plan()

    def _setup_done(self, _python: str) -> None:
        self.show_form()
        self.panel.show_message("The engine is installed: starting it.", "info")
        self.panel.restart_engine()

    def open_models(self) -> None:
        session = self.panel.session
        if self.models_page is None:
            try:
                local = find_local_engine(session.settings)
            except EngineNotFound:
                self.open_setup()
                return
            from .models_page import ModelsPage

            self.models_page = ModelsPage(local.python, local.root, env=session.env)
            self.models_page.changed.connect(self.panel.restart_engine)
            self.models_page.closed.connect(self.show_form)
        self._show("models", self.models_page)
        self.models_page.refresh()


__all__ = ["DockPages", "scrolled"]
