"""The dock panel's container, shared by Krita's docker and the standalone editor's dock area.

PLACEHOLDER (the one in part 1, by design): part 2 of issue 5 fills this container with the real
panel (modes, prompt, parameters, progress, results strip) once the engine client exists.  What it
offers now is the contract the actions and hosts rely on: ``set_mode(mode)``, ``mode``, the
``mode_changed`` signal, and ``canvas_changed()`` which Krita calls when the active view changes.
"""

from __future__ import annotations

from .actions import DOCK_TITLE
from .coreapi import jobs
from .qt import QtWidgets, Signal


class DockPanel(QtWidgets.QWidget):
    mode_changed = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("diffusion_dock_panel")
        self._mode = "inpaint"
        layout = QtWidgets.QVBoxLayout(self)
        self.title = QtWidgets.QLabel(DOCK_TITLE)
        self.mode_box = QtWidgets.QComboBox()
        for mode in jobs.MODES:
            self.mode_box.addItem(jobs.MODE_TITLES[mode], mode)
        self.mode_box.currentIndexChanged.connect(self._on_index)
        layout.addWidget(self.title)
        layout.addWidget(self.mode_box)
        layout.addStretch(1)

    @property
    def mode(self) -> str:
        return self._mode

    def set_mode(self, mode: str) -> None:
        if mode not in jobs.MODES:
            raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(jobs.MODES)}")
        self.mode_box.setCurrentIndex(jobs.MODES.index(mode))
        self._on_index(jobs.MODES.index(mode))

    def _on_index(self, index: int) -> None:
        mode = jobs.MODES[index]
        if mode != self._mode:
            self._mode = mode
            self.mode_changed.emit(mode)

    def canvas_changed(self) -> None:
        """The editor's active document or view changed (Krita: DockWidget.canvasChanged)."""
