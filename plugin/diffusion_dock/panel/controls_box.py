"""The dock's list of control layers (under the prompt): each row is one ``ControlSpec``.

A row has an *on* box, the source layer (default: the active layer), the type, the strength (0–2) and
the start and end as fractions of the steps; *Add control* appends a row, × removes it.  The ranges
come from the engine's ``contract.controls`` so the two cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable

from .. import host as H
from ..runtime.coreapi import controls
from ..runtime.qt import QtWidgets
from ..session.job_builder import ControlSpec

ACTIVE_LAYER = "Active layer"


def control_type_box(box: QtWidgets.QComboBox) -> QtWidgets.QComboBox:
    """The Make control layer mode's choice of control picture."""
    for key in controls.PREPROCESS_TYPES:
        box.addItem(controls.CONTROL_LABELS[key], key)
    box.setToolTip("Canny: OpenCV edges; soft edge, line art, scribble: OpenCV approximations; "
                   "depth: DPT-hybrid (stable-diffusion-2-depth)")
    return box


def _spin(name: str, step: float) -> QtWidgets.QDoubleSpinBox:
    r = controls.RANGES[name]
    box = QtWidgets.QDoubleSpinBox()
    box.setObjectName(f"control_{name}")
    box.setRange(r.low, r.high)
    box.setSingleStep(step)
    box.setDecimals(2)
    box.setValue(r.default)
    box.setToolTip({"strength": "How strongly the model follows this control (0–2)",
                    "start": "The fraction of the steps at which this control starts acting",
                    "end": "The fraction of the steps at which this control stops acting"}[name])
    box.setKeyboardTracking(False)
    return box


class _LayerBox(QtWidgets.QComboBox):
    """The layer list is read again each time it opens (layers come and go)."""

    def __init__(self, refresh: Callable[[], None]):
        super().__init__()
        self._refresh = refresh

    def showPopup(self):
        self._refresh()
        super().showPopup()


class ControlRow(QtWidgets.QWidget):
    def __init__(self, layers: Callable[[], list], on_remove: Callable[[ControlRow], None]):
        super().__init__()
        self.setObjectName("control_row")
        self._layers = layers
        grid = QtWidgets.QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        self.active = QtWidgets.QCheckBox()
        self.active.setObjectName("control_active")
        self.active.setChecked(True)
        self.active.setToolTip("Use this control")
        self.layer = _LayerBox(self.refresh)
        self.layer.setObjectName("control_layer")
        self.layer.setToolTip("The layer holding the control picture; only the area the job works on is sent")
        self.type = QtWidgets.QComboBox()
        self.type.setObjectName("control_type_box")
        for key in controls.CONTROL_TYPES:
            self.type.addItem(controls.CONTROL_LABELS[key], key)
        self.type.setToolTip("Reference image: the picture borrows the layer's colours and textures through "
                             "attention (not its subject); at most one per job")
        self.strength, self.start, self.end = _spin("strength", 0.1), _spin("start", 0.05), _spin("end", 0.05)
        remove = QtWidgets.QToolButton()
        remove.setObjectName("control_remove")
        remove.setText("×")
        remove.setToolTip("Remove this control")
        remove.clicked.connect(lambda: on_remove(self))
        grid.addWidget(self.active, 0, 0)
        grid.addWidget(self.type, 0, 1)
        grid.addWidget(self.layer, 0, 2, 1, 2)
        grid.addWidget(remove, 0, 4)
        grid.addWidget(self.strength, 1, 1)
        grid.addWidget(self.start, 1, 2)
        grid.addWidget(self.end, 1, 3)
        self.refresh()

    def refresh(self) -> None:
        current = self.layer.currentData()
        self.layer.blockSignals(True)
        self.layer.clear()
        self.layer.addItem(ACTIVE_LAYER, None)
        try:
            for info in self._layers():
                if info.kind == "paint" and not info.preview:
                    self.layer.addItem(info.name, info.id)
        except H.HostError:
            pass
        self.layer.setCurrentIndex(max(0, self.layer.findData(current)))
        self.layer.blockSignals(False)

    def spec(self) -> ControlSpec:
        return ControlSpec(self.layer.currentData(), self.type.currentData(), self.strength.value(),
                           self.start.value(), self.end.value(), self.active.isChecked())

    def put(self, spec: ControlSpec) -> None:
        self.refresh()
        self.layer.setCurrentIndex(max(0, self.layer.findData(spec.layer)))
        self.type.setCurrentIndex(max(0, self.type.findData(spec.type)))
        self.strength.setValue(spec.strength)
        self.start.setValue(spec.start)
        self.end.setValue(spec.end)
        self.active.setChecked(spec.active)


class ControlsBox(QtWidgets.QGroupBox):
    """The list of controls; ``specs()`` is what the job builder reads."""

    def __init__(self, layers: Callable[[], list]):
        super().__init__("Controls")
        self.setObjectName("controls")
        self._layers = layers
        self.rows: list[ControlRow] = []
        layout = QtWidgets.QVBoxLayout(self)
        self._list = QtWidgets.QVBoxLayout()
        layout.addLayout(self._list)
        self.add_button = QtWidgets.QPushButton("Add control")
        self.add_button.setObjectName("add_control")
        self.add_button.setToolTip("Steer the picture with a layer: a scribble, line art, edges, a depth map or a "
                                   "pose (needs that type's SD 2.1 ControlNet installed), or a reference image "
                                   "(its look, borrowed through attention: no extra model)")
        self.add_button.clicked.connect(lambda: self.add())
        layout.addWidget(self.add_button)

    def add(self, spec: ControlSpec | None = None) -> ControlRow:
        if len(self.rows) >= controls.MAX_CONTROLS:
            return self.rows[-1]
        row = ControlRow(self._layers, self.remove)
        if spec is not None:
            row.put(spec)
        self.rows.append(row)
        self._list.addWidget(row)
        self.add_button.setEnabled(len(self.rows) < controls.MAX_CONTROLS)
        return row

    def remove(self, row: ControlRow) -> None:
        self.rows.remove(row)
        self._list.removeWidget(row)
        row.deleteLater()
        self.add_button.setEnabled(True)

    def specs(self) -> tuple[ControlSpec, ...]:
        return tuple(r.spec() for r in self.rows)

    def refresh(self) -> None:
        for r in self.rows:
            r.refresh()
