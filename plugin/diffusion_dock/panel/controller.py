"""What the plugin's actions (menu, shortcuts, layer right-click) ask of the dock.

``Controller`` is the interface.  ``PanelController`` finds the dock panel of the active window,
shows its dock window and puts the panel in the requested mode.  ``DockController`` (what Krita and
the standalone editor use) then hands the request to the panel: Fill, Depth map and Upscale ×4 run
at once with the dock's settings; Inpaint, Restyle and Generate wait for the prompt, which gets the
focus (Ctrl+Enter runs).
"""

from __future__ import annotations

import weakref
from abc import ABC, abstractmethod

from ..runtime.qt import QtWidgets
from .actions import BY_ID


class Controller(ABC):
    @abstractmethod
    def show_dock(self) -> None:
        """Make the dock visible and raise it in the active window."""

    @abstractmethod
    def start(self, mode: str, origin: str) -> None:
        """The artist asked for ``mode`` from ``origin`` ("menu", "layer_menu", "shortcut")."""

    def trigger(self, action_id: str, origin: str = "menu") -> None:
        spec = BY_ID[action_id]
        if spec.mode is None:
            self.show_dock()
        else:
            self.start(spec.mode, origin)


class PanelController(Controller):
    def __init__(self):
        self._panels: list[weakref.ref] = []
        self.history: list[tuple[str, str]] = []   # (mode, origin) of each request, newest last

    def register(self, panel) -> None:
        self._panels.append(weakref.ref(panel))

    def panels(self) -> list:
        alive = []
        for ref in self._panels:
            panel = ref()
            if panel is None:
                continue
            try:
                panel.objectName()
            except RuntimeError:      # the C++ widget is gone
                continue
            alive.append(panel)
        self._panels = [weakref.ref(p) for p in alive]
        return alive

    def panel(self):
        """The panel of the active window, else the first one; None when no dock exists yet."""
        panels = self.panels()
        active = QtWidgets.QApplication.activeWindow()
        for panel in panels:
            if active is not None and panel.window() is active:
                return panel
        return panels[0] if panels else None

    def show_dock(self) -> None:
        panel = self.panel()
        if panel is None:
            return
        widget = panel
        while widget is not None and not isinstance(widget, QtWidgets.QDockWidget):
            widget = widget.parentWidget()
        target = widget or panel
        target.setVisible(True)
        target.raise_()

    def start(self, mode: str, origin: str) -> None:
        self.history.append((mode, origin))
        self.show_dock()
        panel = self.panel()
        if panel is not None:
            panel.set_mode(mode)


class DockController(PanelController):
    def start(self, mode: str, origin: str) -> None:
        self.history.append((mode, origin))
        self.show_dock()
        panel = self.panel()
        if panel is None:
            return
        if hasattr(panel, "request"):
            panel.request(mode, origin)
        else:
            panel.set_mode(mode)
