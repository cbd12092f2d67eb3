"""The form's model, LoRA and embedding choices, filled from what the engine lists (its capabilities).

- ``ModelBox``: per mode, the installed models that fit it (catalogue or imported, ``models import``);
  "Default" lets the engine take the mode's first installed catalogue model.
- ``AdapterList``: the LoRA files (each with a weight from −2 to 2) or the embedding files of the
  models folder, ticked per job.  Its value is what ``Params.loras`` / ``Params.embeddings`` take.
"""

from __future__ import annotations

from ..runtime.coreapi import params
from ..runtime.qt import QtWidgets


def fitting_models(models: list[dict], mode: str) -> list[tuple[str, str]]:
    """(key, title) of the installed models that can run ``mode`` (capabilities entries)."""
    return [(m["key"], m.get("title") or m["key"]) for m in models
            if m.get("found") and not m.get("kind") and not m.get("optional") and mode in (m.get("modes") or ())]


def adapter_names(models: list[dict], kind: str) -> list[str]:
    return [m["key"] for m in models if m.get("kind") == kind and m.get("found")]


class ModelBox(QtWidgets.QComboBox):
    def __init__(self):
        super().__init__()
        self.setObjectName("model")
        self.setSizeAdjustPolicy(QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(12)
        self.setToolTip("The model for this mode (saved per mode). Import your own SD2 checkpoints with the models "
                        "page or `python -m installer models import`")
        self.addItem("Default", None)

    def set_models(self, entries: list[tuple[str, str]], chosen: str | None) -> None:
        self.blockSignals(True)
        self.clear()
        self.addItem("Default", None)
        for key, title in entries:
            self.addItem(title, key)
        if chosen and self.findData(chosen) < 0:     # chosen before, not installed now: kept, marked
            self.addItem(f"{chosen} (not installed)", chosen)
        self.setCurrentIndex(max(0, self.findData(chosen)))
        self.blockSignals(False)


class AdapterList(QtWidgets.QWidget):
    """One row per file: a tick box and (LoRA) its weight."""

    def __init__(self, name: str, weighted: bool):
        super().__init__()
        self.setObjectName(name)
        self.weighted = weighted
        self._rows: dict[str, tuple[QtWidgets.QCheckBox, QtWidgets.QDoubleSpinBox | None]] = {}
        self._layout = QtWidgets.QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(0)
        self.empty = QtWidgets.QLabel("none installed (models folder: loras/)" if weighted
                                      else "none installed (models folder: embeddings/)")
        self._layout.addWidget(self.empty)

    def set_names(self, names: list[str]) -> None:
        keep = self.form_value()
        for box, spin in self._rows.values():
            box.deleteLater()
            if spin is not None:
                spin.parentWidget().deleteLater()
        self._rows.clear()
        for name in names:
            box = QtWidgets.QCheckBox(name.rsplit(".", 1)[0])
            box.setToolTip(name + ("" if self.weighted else ": its word in the prompt is the file's name"))
            spin = None
            if self.weighted:
                rng = params.RANGES["lora_weight"]
                spin = QtWidgets.QDoubleSpinBox()
                spin.setRange(rng.low, rng.high)
                spin.setSingleStep(0.1)
                spin.setDecimals(2)
                spin.setValue(1.0)
                row = QtWidgets.QWidget()
                rl = QtWidgets.QHBoxLayout(row)
                rl.setContentsMargins(0, 0, 0, 0)
                rl.addWidget(box, 1)
                rl.addWidget(spin)
                self._layout.addWidget(row)
            else:
                self._layout.addWidget(box)
            self._rows[name] = (box, spin)
        self.empty.setVisible(not names)
        self.set_form_value(keep)

    def form_value(self) -> tuple:
        out = []
        for name, (box, spin) in self._rows.items():
            if box.isChecked():
                out.append((name, round(spin.value(), 2)) if spin is not None else name)
        return tuple(out)

    def set_form_value(self, value) -> None:
        chosen: dict[str, float] = {}
        for item in value or ():
            if isinstance(item, (list, tuple)) and len(item) == 2:
                chosen[str(item[0])] = float(item[1])
            elif isinstance(item, str):
                chosen[item] = 1.0
        for name, (box, spin) in self._rows.items():
            box.setChecked(name in chosen)
            if spin is not None and name in chosen:
                spin.setValue(chosen[name])


__all__ = ["AdapterList", "ModelBox", "adapter_names", "fitting_models"]
