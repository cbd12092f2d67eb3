"""The dock's Live row (shown for modes the dock can run live: ``ModeSpec.live``): the Live switch, Apply
(the frame on the canvas becomes a new layer) and a line saying how Live is doing.  What Live does is
``session.live.LiveSession``; this widget shows it and feeds it the form's changes."""

from __future__ import annotations

from ..runtime.qt import QtWidgets
from ..session.live import LiveSession


class LiveBar(QtWidgets.QWidget):
    def __init__(self, live: LiveSession, form, parent=None):
        super().__init__(parent)
        self.setObjectName("live_bar")
        self.live = live
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QtWidgets.QHBoxLayout()
        self.toggle = QtWidgets.QPushButton("Live")
        self.toggle.setObjectName("live")
        self.toggle.setCheckable(True)
        self.toggle.setToolTip("Repaint the layer (or the selection) with SD-Turbo after every change of the "
                               "layer, the selection or the prompt; the frame shows on the canvas")
        self.apply_button = QtWidgets.QPushButton("Apply frame")
        self.apply_button.setObjectName("live_apply")
        self.apply_button.setToolTip("Add the frame on the canvas as a new layer above its source, and stop Live")
        row.addWidget(self.toggle, 2)
        row.addWidget(self.apply_button, 1)
        layout.addLayout(row)
        self.status = QtWidgets.QLabel("Live is off.")
        self.status.setObjectName("live_status")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.toggle.toggled.connect(self._toggled)
        self.apply_button.clicked.connect(self.live.apply)
        live.changed.connect(self.refresh)
        for signal in (form.prompt.textChanged, form.weighted.toggled, form.steps.valueChanged,
                       form.strength.valueChanged, form.seed.textChanged, form.grow.valueChanged,
                       form.feather.valueChanged, form.color_match.toggled, form.vae.currentIndexChanged):
            signal.connect(self._settings_changed)
        self.refresh()

    def _settings_changed(self, *_args) -> None:
        self.live.settings_changed()

    def _toggled(self, on: bool) -> None:
        if on and not self.live.active:
            if not self.live.start():
                self.toggle.setChecked(False)
        elif not on and self.live.active:
            self.live.stop()

    def set_on(self, on: bool) -> None:
        self.toggle.setChecked(on)

    def refresh(self) -> None:
        if self.toggle.isChecked() != self.live.active:
            self.toggle.blockSignals(True)
            self.toggle.setChecked(self.live.active)
            self.toggle.blockSignals(False)
        self.apply_button.setEnabled(self.live.shown is not None)
        self.status.setText(self.live.status_text())
