"""The dock's form: its widgets bound to a ``JobSpec``.

Every field of ``Params``, ``Options`` and ``JobSpec`` the dock edits is bound once (``Binding``): the
widget, how to read and write its value, and the row it sits in.  Reading the form, writing settings
into it, showing the rows a mode uses (from its ``ModeSpec``) and marking a field invalid all go
through the bindings, so a new option is one ``bind`` call.  The form remembers each mode's options
while another mode is shown.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .. import host as H
from ..runtime.coreapi import expand, jobs, modes, params
from ..runtime.qt import QtWidgets, Signal
from ..session.job_builder import DockError, JobSpec, mode_label, text_size
from .controls_box import ControlsBox, control_type_box
from .mode_params import ModeParams
from .model_choice import AdapterList, ModelBox, adapter_names, fitting_models
from .widgets import (
    MultipleOf8Spin,
    RunKeys,
    SeedEdit,
    compact_combo,
    float_spin,
    growth_box,
    int_spin,
    prompt_edit,
    sampler_combo,
    vae_combo,
)

FIRST_MODE = "inpaint"       # the dock starts here
MASKED_CONTENT_LABELS = {"original": "original pixels", "fill": "filled (object removed)", "noise": "noise"}
BACKEND_LABELS = {"auto": "auto (LaMa when installed)", "patch": "Patches (no model, textured)",
                  "opencv": "OpenCV (fastest, smooth)", "lama": "LaMa"}
NOT_SAVED = ("output_format", "output_linear")
# The rows of the options group that make it worth showing (size and colour match alone do not).
OPTION_ROWS = ("grow", "feather", "masked_content", "depth_source", "noise_level", "tile", "image_to_image", "backend",
               "expand", "vae", "control_type")    # options the job builder sets, never the artist
PARAM_FIELDS = {f.name for f in fields(jobs.Params)}
OPTION_FIELDS = {f.name for f in fields(jobs.Options)}


def widget_value(widget) -> Any:
    if isinstance(widget, AdapterList):
        return widget.form_value()
    if isinstance(widget, SeedEdit):
        return widget.seed()
    if isinstance(widget, (QtWidgets.QSpinBox, QtWidgets.QDoubleSpinBox)):
        return widget.value()
    if isinstance(widget, QtWidgets.QAbstractButton):
        return widget.isChecked()
    if isinstance(widget, QtWidgets.QComboBox):
        return widget.currentData()
    if isinstance(widget, QtWidgets.QPlainTextEdit):
        return widget.toPlainText()
    raise TypeError(f"no value for {type(widget).__name__}")


def put_widget_value(widget, value) -> None:
    if isinstance(widget, AdapterList):
        widget.set_form_value(value)
    elif isinstance(widget, SeedEdit):
        widget.set_seed(value)
    elif isinstance(widget, QtWidgets.QSpinBox):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            widget.setValue(int(value))
    elif isinstance(widget, QtWidgets.QDoubleSpinBox):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            widget.setValue(float(value))
    elif isinstance(widget, QtWidgets.QAbstractButton):
        widget.setChecked(bool(value))
    elif isinstance(widget, QtWidgets.QComboBox):
        widget.setCurrentIndex(max(0, widget.findData(value)))
    elif isinstance(widget, QtWidgets.QPlainTextEdit):
        if isinstance(value, str):
            widget.setPlainText(value)


@dataclass
class Binding:
    """One field bound to one widget.  ``row``: the form row that shows it (rows may hold several)."""

    name: str
    widget: QtWidgets.QWidget
    row: str

    def get(self):
        return widget_value(self.widget)

    def put(self, value) -> None:
        put_widget_value(self.widget, value)


class JobForm(QtWidgets.QWidget):
    """Mode, prompts, parameters and the mode's options.  ``layers()`` lists the document's layers (for
    the depth source); ``canvas_size()`` the active document's size, or None."""

    mode_changed = Signal(str)
    growth_changed = Signal()          # the expand sizes changed (the context line shows the new canvas)

    def __init__(self, run: Callable[[], object], layers: Callable[[], list], canvas_size: Callable[[], Any],
                 parent=None):
        super().__init__(parent)
        self._canvas_size = canvas_size
        self._mode = FIRST_MODE
        self._mode_options: dict[str, jobs.Options] = {m: jobs.default_options(m) for m in modes.MODES}
        self._mode_models: dict[str, str] = {}       # mode → the model chosen for it (saved in the settings)
        self._installed: list[dict] = []             # the engine's capabilities entries
        self._mode_params = ModeParams()             # Live's own steps and strength
        self.bindings: dict[str, Binding] = {}
        self.rows: dict[str, tuple] = {}
        self._invalid: list[QtWidgets.QWidget] = []
        self._build(run, layers)
        self.set_mode(FIRST_MODE, force=True)

    # --- building ------------------------------------------------------------------------------------

    def bind(self, name: str, widget, row: str | None = None) -> None:
        self.bindings[name] = Binding(name, widget, row or name)

    def _row(self, form, key: str, label: str, widget) -> None:
        lab = QtWidgets.QLabel(label) if label else None
        if lab is not None:
            form.addRow(lab, widget)
        else:
            form.addRow(widget)
        self.rows[key] = (lab, widget)

    def _build(self, run, layers) -> None:
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.mode_box = compact_combo("mode")
        for m in modes.MODE_TABLE:
            self.mode_box.addItem(m.label, m.key)
        self.mode_box.currentIndexChanged.connect(lambda i: self.set_mode(modes.MODES[i]))
        self.context = QtWidgets.QLabel()
        self.context.setObjectName("context")
        self.context.setWordWrap(True)
        self.context.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(QtWidgets.QLabel("Mode"))
        row.addWidget(self.mode_box, 1)
        layout.addLayout(row)
        layout.addWidget(self.context)
        self.bind("mode", self.mode_box, "mode")

        run_keys = RunKeys(run, self)
        self.prompt = prompt_edit("prompt", "Describe what to paint… (Ctrl+Enter runs)", 3)
        self.negative = prompt_edit("negative_prompt", "Negative prompt: what to avoid", 1)
        for edit in (self.prompt, self.negative):
            edit.installEventFilter(run_keys)
        self.weighted = QtWidgets.QCheckBox("Weighted prompts")
        self.weighted.setObjectName("weighted")
        self.weighted.setToolTip("compel syntax: (word)1.3 or word++ to stress, [word] or word-- to soften; "
                                 "long prompts are split into chunks")
        self.prompt_box = QtWidgets.QWidget()
        pl = QtWidgets.QVBoxLayout(self.prompt_box)
        pl.setContentsMargins(0, 0, 0, 0)
        for w in (self.prompt, self.negative, self.weighted):
            pl.addWidget(w)
        layout.addWidget(self.prompt_box)
        for name, w in (("prompt", self.prompt), ("negative_prompt", self.negative), ("weighted", self.weighted)):
            self.bind(name, w, "prompt")
        self.controls_box = ControlsBox(layers)
        layout.addWidget(self.controls_box)

        self.num_images, self.steps = int_spin("num_images"), int_spin("steps")
        self.guidance, self.strength = float_spin("guidance", 0.5, 1), float_spin("strength", 0.05, 2)
        self.seed = SeedEdit()
        self.sampler = sampler_combo()
        self.reuse_seed = QtWidgets.QToolButton()
        self.reuse_seed.setObjectName("reuse_seed")
        self.reuse_seed.setText("Last")
        self.reuse_seed.setToolTip("Reuse the seed of the last result")
        seed_box = QtWidgets.QWidget()
        seed_row = QtWidgets.QHBoxLayout(seed_box)
        seed_row.setContentsMargins(0, 0, 0, 0)
        seed_row.addWidget(self.seed, 1)
        seed_row.addWidget(self.reuse_seed)
        self.params_form = QtWidgets.QFormLayout()
        for key, label, widget, box in (("num_images", "Images", self.num_images, None),
                                        ("steps", "Steps", self.steps, None),
                                        ("sampler", "Sampler", self.sampler, None),
                                        ("guidance", "Guidance", self.guidance, None),
                                        ("strength", "Strength", self.strength, None),
                                        ("seed", "Seed", self.seed, seed_box)):
            self._row(self.params_form, key, label, box or widget)
            self.bind(key, widget)
        self.model_box = ModelBox()
        self.model_box.currentIndexChanged.connect(self._model_picked)
        self.loras, self.embeddings = AdapterList("loras", True), AdapterList("embeddings", False)
        for key, label, chooser in (("model", "Model", self.model_box), ("loras", "LoRA", self.loras),
                                    ("embeddings", "Embeddings", self.embeddings)):
            self._row(self.params_form, key, label, chooser)
            self.bind(key, chooser)
        layout.addLayout(self.params_form)
        self._build_options(layout, layers)

    def _build_options(self, layout, layers) -> None:
        self.options_group = QtWidgets.QGroupBox("Options")
        form = QtWidgets.QFormLayout(self.options_group)
        self.grow = int_spin("grow")
        self.grow.setToolTip("How far beyond the selection the model repaints (px)")
        self.feather = int_spin("feather")
        self.feather.setToolTip("Soft edge inside the selection (px)")
        self.masked_content = compact_combo("masked_content")
        for key in jobs.MASKED_CONTENT:
            self.masked_content.addItem(MASKED_CONTENT_LABELS[key], key)
        self.masked_content.setToolTip("What the diffusion starts from under the selection. It matters only "
                                       "below strength 1: at strength 1 the selection starts from noise anyway.")
        self.masked_hint = QtWidgets.QLabel("matters only below strength 1")
        self.masked_hint.setObjectName("masked_hint")
        self.masked_hint.setWordWrap(True)
        mc = QtWidgets.QWidget()
        mcl = QtWidgets.QVBoxLayout(mc)
        mcl.setContentsMargins(0, 0, 0, 0)
        mcl.setSpacing(0)
        mcl.addWidget(self.masked_content)
        mcl.addWidget(self.masked_hint)
        self.depth_source = DepthSourceBox(layers)
        self.noise_level = int_spin("noise_level")
        self.noise_level.setToolTip("Noise added to the input before upscaling: more lets the model invent more "
                                    f"({params.RANGES['noise_level'].describe()})")
        self.tile = int_spin("tile", step=32)
        self.tile.setToolTip("Tile side in input pixels: memory depends on it, not on the image size")
        self.width_box, self.height_box = MultipleOf8Spin("width"), MultipleOf8Spin("height")
        size = QtWidgets.QWidget()
        sl = QtWidgets.QHBoxLayout(size)
        sl.setContentsMargins(0, 0, 0, 0)
        sl.addWidget(self.width_box)
        sl.addWidget(QtWidgets.QLabel("×"))
        sl.addWidget(self.height_box)
        self.canvas_size_button = QtWidgets.QToolButton()
        self.canvas_size_button.setObjectName("canvas_size")
        self.canvas_size_button.setText("Canvas")
        self.canvas_size_button.setToolTip("The canvas size (rounded down to multiples of 8). Without a "
                                           "selection the image is painted at the top left; a size larger "
                                           "than the canvas opens as a new document")
        self.canvas_size_button.clicked.connect(self.size_from_canvas)
        sl.addWidget(self.canvas_size_button)
        self.image_to_image = QtWidgets.QCheckBox("Start from the layer (image-to-image)")
        self.image_to_image.setObjectName("image_to_image")
        self.image_to_image.toggled.connect(lambda _c: self.update_rows())
        self.backend = compact_combo("backend")
        for key in jobs.FILL_BACKENDS:
            self.backend.addItem(BACKEND_LABELS[key], key)
        grow_box, self.expand_boxes = growth_box(self.growth_changed.emit)
        self.vae = vae_combo()
        self.control_type = control_type_box(compact_combo("control_type"))
        self.color_match = QtWidgets.QCheckBox("Match colours")
        self.color_match.setObjectName("color_match")
        self.color_match.setToolTip("Match the result's colours (mean and spread) to the ring around the selection")
        self.color_match.setChecked(True)
        for key, label, widget, shown in (("grow", "Grow", self.grow, None), ("feather", "Feather", self.feather, None),
                                          ("masked_content", "Masked content", self.masked_content, mc),
                                          ("depth_source", "Depth", self.depth_source, None),
                                          ("noise_level", "Noise level", self.noise_level, None),
                                          ("tile", "Tile", self.tile, None),
                                          ("image_to_image", "", self.image_to_image, None),
                                          ("size", "Size", None, size), ("backend", "Fill with", self.backend, None),
                                          ("expand", "Add", None, grow_box),
                                          ("vae", "Autoencoder", self.vae, None),
                                          ("control_type", "Make", self.control_type, None),
                                          ("color_match", "", self.color_match, None)):
            self._row(form, key, label, shown or widget)
            if widget is not None:
                self.bind(key, widget)
        self.bind("width", self.width_box, "size")
        self.bind("height", self.height_box, "size")
        self.bind("depth", self.depth_source, "depth_source")   # errors about the given depth image
        for name, box in self.expand_boxes.items():
            self.bind(name, box, "expand")
        self.bind("expand", grow_box, "expand")                  # errors about the growth as a whole
        layout.addWidget(self.options_group)

    # --- modes ---------------------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def mode_spec(self) -> modes.ModeSpec:
        return modes.spec(self._mode)

    def set_mode(self, mode: str, force: bool = False) -> None:
        if mode not in modes.MODE_SPECS:
            raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(modes.MODES)}")
        if mode == self._mode and not force:
            return
        if not force:
            self._mode_options[self._mode] = self.read_options()
        old, self._mode = self._mode, mode
        self._mode_params.switch(self.bindings, old, mode)
        if self.mode_box.currentIndex() != modes.MODES.index(mode):
            self.mode_box.blockSignals(True)
            self.mode_box.setCurrentIndex(modes.MODES.index(mode))
            self.mode_box.blockSignals(False)
        self.write_options(self._mode_options[mode])
        self._fill_models()
        self.update_rows()
        if mode != old:
            self.mode_changed.emit(mode)

    @property
    def text_to_image(self) -> bool:
        """The mode paints without reading the layer (its image is optional and not asked for)."""
        return self.mode_spec.image == modes.IMAGE_OPTIONAL and not self.image_to_image.isChecked()

    def update_rows(self) -> None:
        """Show the rows the mode uses."""
        ms = self.mode_spec
        used = set(ms.params) | set(ms.options)
        visible = {key: key in used for key in self.rows}
        visible.update(expand=any(f in used for f in expand.FIELDS), model=bool(ms.models),
                       strength="strength" in used and ms.uses_strength(not self.text_to_image),
                       image_to_image=ms.image == modes.IMAGE_OPTIONAL,
                       size="width" in used and self.text_to_image)
        self.prompt_box.setVisible("prompt" in used)
        self.negative.setVisible("negative_prompt" in used)
        self.controls_box.setVisible(ms.controls)
        for key, (lab, widget) in self.rows.items():
            widget.setVisible(visible[key])
            if lab is not None:
                lab.setVisible(visible[key])
        self.options_group.setVisible(any(visible[k] for k in OPTION_ROWS))
        self.options_group.setTitle(f"{ms.label} options")

    # --- reading and writing -------------------------------------------------------------------------

    def read_params(self) -> jobs.Params:
        """The form's common parameters; raises DockError for a bad seed."""
        try:
            values = {name: self.bindings[name].get() for name in PARAM_FIELDS}
        except params.ValidationError as e:
            raise DockError(str(e), e.parameter) from None
        return jobs.Params(**values)

    def read_options(self) -> jobs.Options:
        base = self._mode_options.get(self._mode, jobs.Options())
        sized = "width" in self.mode_spec.options
        values = {name: b.get() for name, b in self.bindings.items()
                  if name in OPTION_FIELDS and (sized or name not in ("width", "height"))}
        values.pop("depth_source", None)     # the job builder sets it from the depth layer
        return replace(base, **values)

    def write_options(self, o: jobs.Options) -> None:
        for name, value in asdict(o).items():
            b = self.bindings.get(name)
            if b is None or name == "depth_source" or (name in ("width", "height") and not (o.width and o.height)):
                continue
            b.put(value)

    def spec(self) -> JobSpec:
        """What the form asks for, as a JobSpec (raises DockError)."""
        ms = self.mode_spec
        return JobSpec(self._mode, self.read_params(), self.read_options(), model=self.model_box.currentData(),
                       depth_layer=self.depth_source.currentData() if "depth_source" in ms.options else None,
                       image_to_image=ms.image == modes.IMAGE_OPTIONAL and self.image_to_image.isChecked(),
                       controls=self.controls_box.specs() if ms.controls else ())

    def load_spec(self, mode: str, p: dict, o: dict) -> None:
        """Put a provenance record's (or saved) settings into the form."""
        self._mode_options[mode] = self._options_from(mode, o or {})
        self.set_mode(mode, force=True)
        for name, value in (p or {}).items():
            if name in PARAM_FIELDS:
                self.bindings[name].put(value)

    @staticmethod
    def _options_from(mode: str, values: dict) -> jobs.Options:
        known = {k: v for k, v in values.items() if k in OPTION_FIELDS and k not in NOT_SAVED}
        return replace(jobs.default_options(mode), **known)

    def restore(self, saved: dict) -> None:
        """The per-mode options saved in the settings (``saved_options``); bad entries are skipped."""
        for mode, values in (saved or {}).items():
            if mode in self._mode_options and isinstance(values, dict):
                try:
                    self._mode_options[mode] = self._options_from(mode, values)
                except TypeError:
                    pass
        self.write_options(self._mode_options[self._mode])

    def saved_options(self) -> dict:
        self._mode_options[self._mode] = self.read_options()
        return {m: {k: v for k, v in asdict(o).items() if k not in NOT_SAVED} for m, o in self._mode_options.items()}

    # --- models, LoRAs, embeddings ------------------------------------------------------------------

    def set_installed(self, models: list[dict]) -> None:
        """What the engine found (its capabilities' model entries)."""
        self._installed = list(models or [])
        self.loras.set_names(adapter_names(self._installed, "lora"))
        self.embeddings.set_names(adapter_names(self._installed, "embedding"))
        self._fill_models()

    def _fill_models(self) -> None:
        self.model_box.set_models(fitting_models(self._installed, self._mode), self._mode_models.get(self._mode))

    def _model_picked(self, _index: int) -> None:
        key = self.model_box.currentData()
        if key:
            self._mode_models[self._mode] = key
        else:
            self._mode_models.pop(self._mode, None)

    def model_choices(self) -> dict:
        return dict(self._mode_models)

    def restore_models(self, saved) -> None:
        if isinstance(saved, dict):
            self._mode_models = {m: k for m, k in saved.items() if m in modes.MODE_SPECS and isinstance(k, str)}
        self._fill_models()

    def size_from_canvas(self) -> None:
        """Width and height of text-to-image: the canvas, in multiples of 8."""
        size = self._canvas_size()
        if size is None:
            return
        w, h = text_size(size)
        self.width_box.setValue(w)
        self.height_box.setValue(h)
        if "width" in self.mode_spec.options:
            self._mode_options[self._mode] = replace(self._mode_options[self._mode], width=w, height=h)

    def needs_size(self) -> bool:
        return "width" in self.mode_spec.options and not self._mode_options[self._mode].width

    # --- invalid fields ------------------------------------------------------------------------------

    def mark_invalid(self, parameter: str | None) -> None:
        for w in self._invalid:
            _set_invalid(w, False)
        self._invalid = []
        binding = self.bindings.get(parameter or "")
        if binding is not None:
            _set_invalid(binding.widget, True)
            self._invalid.append(binding.widget)
        elif (parameter or "").startswith("controls"):
            _set_invalid(self.controls_box, True)
            self._invalid.append(self.controls_box)

    def invalid_widgets(self) -> list:
        return list(self._invalid)

    def title(self) -> str:
        return mode_label(self._mode)


def _set_invalid(widget, invalid: bool) -> None:
    widget.setProperty("invalid", invalid)
    widget.style().unpolish(widget)
    widget.style().polish(widget)


class DepthSourceBox(QtWidgets.QComboBox):
    """The depth of a mode with a depth source: estimated (auto), or one of the document's layers; the
    list is refreshed each time it opens."""

    def __init__(self, layers: Callable[[], list]):
        super().__init__()
        self.setObjectName("depth_source")
        self.setSizeAdjustPolicy(QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(10)
        self._layers = layers
        self.setToolTip("Auto estimates the depth (DPT-hybrid); a layer gives it (white = near), e.g. a depth map "
                        "made by the Depth map mode and retouched")
        self.refresh()

    def refresh(self) -> None:
        current = self.currentData()
        self.blockSignals(True)
        self.clear()
        self.addItem("Auto (estimated)", None)
        try:
            for layer in self._layers():
                if layer.kind == "paint" and not layer.preview:
                    self.addItem(f"Layer: {layer.name}", layer.id)
        except H.HostError:
            pass
        self.setCurrentIndex(max(0, self.findData(current)))
        self.blockSignals(False)

    def showPopup(self):
        self.refresh()
        super().showPopup()

    def select_layer(self, layer_id: str | None) -> None:
        self.refresh()
        self.setCurrentIndex(max(0, self.findData(layer_id)))


__all__ = ["DepthSourceBox", "JobForm"]
