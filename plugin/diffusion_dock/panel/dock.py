"""The dock panel, shared by Krita's docker and the standalone editor's dock area.

From top to bottom: the engine's status (with restart and a menu), the mode, what the job will work
on, the prompt and negative prompt, the common parameters, the mode's own options, a message line
(validation errors, the engine's errors, warnings), Generate/Cancel, the progress of the running job
with a live preview of its steps, the queue, and the results strip with Apply, Apply all, Discard
and Reuse settings.

The panel talks to the editor only through the host interface (``host.Host``) and to the engine only
through the shared ``DockSession``.  Nothing here blocks: jobs are followed asynchronously and every
result is saved to disk before it is shown.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, fields, replace

from .. import host as H
from ..runtime import qimages
from ..runtime.coreapi import jobs, modes, params
from ..runtime.qt import QShortcut, QtCore, QtGui, QTimer, QtWidgets, Signal
from ..session.job_builder import DockError, JobSpec, build, mode_label, text_size
from .widgets import (
    ID_ROLE,
    EngineSettingsDialog,
    EngineStatusBar,
    MultipleOf8Spin,
    QueueList,
    ResultsStrip,
    RunKeys,
    SeedEdit,
    compact_combo,
    engine_text,
    float_spin,
    int_spin,
    prompt_edit,
)

log = logging.getLogger(__name__)

FIRST_MODE = "inpaint"       # the dock starts here ...
NO_MODEL_MODE = "fill"       # ... or here, when the first mode's model is not installed (this one needs none)
MASKED_CONTENT_LABELS = {"original": "original pixels", "fill": "filled (object removed)", "noise": "noise"}
BACKEND_LABELS = {"auto": "auto (LaMa when installed)", "opencv": "OpenCV (fast, smooth)", "lama": "LaMa"}
STYLE = """
*[invalid="true"] { border: 1px solid #d33; }
QLabel#message[kind="error"] { color: #d33; }
QLabel#message[kind="warning"] { color: #c80; }
"""


class DockPanel(QtWidgets.QWidget):
    mode_changed = Signal(str)

    def __init__(self, parent=None, host: H.Host | None = None, session=None):
        super().__init__(parent)
        self.setObjectName("diffusion_dock_panel")
        self.setStyleSheet(STYLE)
        self.host = host
        if session is None:
            from ..session.dock_session import shared_session

            session = shared_session()
        self.session = session
        self._mode = FIRST_MODE
        self._mode_options: dict[str, jobs.Options] = {m: jobs.default_options(m) for m in modes.MODES}
        self._invalid: list[QtWidgets.QWidget] = []
        self._previewing = None            # (HostDocument, result id) shown on the canvas
        self._own_jobs: set[str] = set()    # jobs this panel started (it previews their results)
        self.last_offer: H.UnsupportedColorModel | None = None
        self.last_message = ("", "")
        self._models_checked = False       # the engine's first capabilities were looked at
        self._build()
        self._load_form()
        self._connect_session()
        self.set_mode(FIRST_MODE, force=True)
        self._refresh_engine()
        self._load_history()

    # ------------------------------------------------------------------------------------ building

    def _build(self) -> None:
        outer = QtWidgets.QVBoxLayout(self)
        outer.setContentsMargins(4, 4, 4, 4)
        scroll = QtWidgets.QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QtWidgets.QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        outer.addWidget(scroll)
        body = QtWidgets.QWidget()
        scroll.setWidget(body)
        layout = QtWidgets.QVBoxLayout(body)
        layout.setContentsMargins(0, 0, 0, 0)

        self.engine_bar = EngineStatusBar()
        self.engine_bar.restart_requested.connect(self.restart_engine)
        menu = self.engine_bar.menu
        menu.addAction("Engine settings…", self.open_engine_settings)
        menu.addAction("Reuse the settings of the active layer", self.reuse_layer_settings)
        menu.addAction("Cancel all jobs", self.session.cancel_all)
        menu.addAction("Open the results folder", self._open_results_folder)
        layout.addWidget(self.engine_bar)
        self.model_hint = QtWidgets.QLabel()
        self.model_hint.setObjectName("model_hint")
        self.model_hint.setWordWrap(True)
        self.model_hint.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.model_hint.hide()
        layout.addWidget(self.model_hint)

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

        run_keys = RunKeys(self.generate, self)
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
        pl.addWidget(self.prompt)
        pl.addWidget(self.negative)
        pl.addWidget(self.weighted)
        layout.addWidget(self.prompt_box)

        self.num_images = int_spin("num_images")
        self.steps = int_spin("steps")
        self.guidance = float_spin("guidance", 0.5, 1)
        self.strength = float_spin("strength", 0.05, 2)
        self.seed = SeedEdit()
        self.reuse_seed = QtWidgets.QToolButton()
        self.reuse_seed.setObjectName("reuse_seed")
        self.reuse_seed.setText("Last")
        self.reuse_seed.setToolTip("Reuse the seed of the last result")
        self.reuse_seed.clicked.connect(self.use_last_seed)
        seed_row = QtWidgets.QHBoxLayout()
        seed_row.setContentsMargins(0, 0, 0, 0)
        seed_row.addWidget(self.seed, 1)
        seed_row.addWidget(self.reuse_seed)
        seed_box = QtWidgets.QWidget()
        seed_box.setLayout(seed_row)
        self.params_form = QtWidgets.QFormLayout()
        self.rows: dict[str, tuple] = {}
        for key, label, widget in (("num_images", "Images", self.num_images), ("steps", "Steps", self.steps),
                                   ("guidance", "Guidance", self.guidance), ("strength", "Strength", self.strength),
                                   ("seed", "Seed", seed_box)):
            self._add_row(self.params_form, key, label, widget)
        layout.addLayout(self.params_form)

        self.options_group = QtWidgets.QGroupBox("Options")
        self.options_form = QtWidgets.QFormLayout(self.options_group)
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
        self.depth_source = DepthSourceBox(self)
        self.noise_level = int_spin("noise_level")
        self.noise_level.setToolTip("Noise added to the input before upscaling: more lets the model invent more "
                                    f"({params.RANGES['noise_level'].describe()})")
        self.tile = int_spin("tile", step=32)
        self.tile.setToolTip("Tile side in input pixels: memory depends on it, not on the image size")
        self.width_box = MultipleOf8Spin("width")
        self.height_box = MultipleOf8Spin("height")
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
        self.image_to_image.toggled.connect(lambda _c: self._update_rows())
        self.backend = compact_combo("backend")
        for key in jobs.FILL_BACKENDS:
            self.backend.addItem(BACKEND_LABELS[key], key)
        self.color_match = QtWidgets.QCheckBox("Match colours")
        self.color_match.setObjectName("color_match")
        self.color_match.setToolTip("Match the result's colours (mean and spread) to the ring around the selection")
        self.color_match.setChecked(True)
        for key, label, widget in (("grow", "Grow", self.grow), ("feather", "Feather", self.feather),
                                   ("masked_content", "Masked content", mc),
                                   ("depth_source", "Depth", self.depth_source),
                                   ("noise_level", "Noise level", self.noise_level), ("tile", "Tile", self.tile),
                                   ("image_to_image", "", self.image_to_image), ("size", "Size", size),
                                   ("backend", "Fill with", self.backend),
                                   ("color_match", "", self.color_match)):
            self._add_row(self.options_form, key, label, widget)
        layout.addWidget(self.options_group)

        self.message = QtWidgets.QLabel()
        self.message.setObjectName("message")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message.hide()
        layout.addWidget(self.message)

        self.generate_button = QtWidgets.QPushButton("Generate")
        self.generate_button.setObjectName("generate")
        self.generate_button.setToolTip("Run the job (Ctrl+Enter)")
        self.generate_button.setDefault(True)
        self.generate_button.clicked.connect(self.generate)
        self.cancel_button = QtWidgets.QPushButton("Cancel")
        self.cancel_button.setObjectName("cancel")
        self.cancel_button.setToolTip("Cancel the selected job in the queue, else the running one")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)
        buttons = QtWidgets.QHBoxLayout()
        buttons.addWidget(self.generate_button, 2)
        buttons.addWidget(self.cancel_button, 1)
        layout.addLayout(buttons)
        for seq in ("Ctrl+Return", "Ctrl+Enter"):
            sc = QShortcut(QtGui.QKeySequence(seq), self)
            sc.setContext(QtCore.Qt.ShortcutContext.WidgetWithChildrenShortcut)
            sc.activated.connect(self.generate)

        self.progress = QtWidgets.QProgressBar()
        self.progress.setObjectName("progress")
        self.progress.setTextVisible(True)
        self.progress.hide()
        self.preview = QtWidgets.QLabel()
        self.preview.setObjectName("live_preview")
        self.preview.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.preview.setFixedHeight(128)
        self.preview.hide()
        layout.addWidget(self.progress)
        layout.addWidget(self.preview)
        self.queue = QueueList()
        layout.addWidget(self.queue)

        layout.addWidget(QtWidgets.QLabel("Results"))
        self.results = ResultsStrip()
        self.results.itemSelectionChanged.connect(self._on_result_selection)
        layout.addWidget(self.results)
        row = QtWidgets.QHBoxLayout()
        self.apply_button = QtWidgets.QPushButton("Apply")
        self.apply_button.setObjectName("apply")
        self.apply_button.setToolTip("Add the selected result(s) as new layers above their source layer")
        self.apply_all_button = QtWidgets.QPushButton("Apply all")
        self.apply_all_button.setObjectName("apply_all")
        self.apply_all_button.setToolTip("Apply every result of the job (the selected one's, else the latest)")
        self.discard_button = QtWidgets.QPushButton("Discard")
        self.discard_button.setObjectName("discard")
        self.discard_button.setToolTip("Remove the selected result(s) from the strip and from disk")
        self.reuse_button = QtWidgets.QToolButton()
        self.reuse_button.setObjectName("reuse_settings")
        self.reuse_button.setText("Reuse")
        self.reuse_button.setToolTip("Load the selected result's mode, prompt, seed and settings (to re-run it)")
        self.apply_button.clicked.connect(lambda: self.apply_results(self.results.selected_records()))
        self.apply_all_button.clicked.connect(self.apply_all)
        self.discard_button.clicked.connect(lambda: self.discard_results(self.results.selected_records()))
        self.reuse_button.clicked.connect(self.reuse_selected)
        for b in (self.apply_button, self.apply_all_button, self.discard_button, self.reuse_button):
            row.addWidget(b)
        layout.addLayout(row)
        self.result_info = QtWidgets.QLabel()
        self.result_info.setObjectName("result_info")
        self.result_info.setWordWrap(True)
        layout.addWidget(self.result_info)
        layout.addStretch(1)
        self._update_result_buttons()

    def _add_row(self, form, key, label, widget) -> None:
        lab = QtWidgets.QLabel(label) if label else None
        if lab is not None:
            form.addRow(lab, widget)
        else:
            form.addRow(widget)
        self.rows[key] = (lab, widget)

    # ------------------------------------------------------------------------------------ modes and form

    @property
    def mode(self) -> str:
        return self._mode

    def set_mode(self, mode: str, force: bool = False) -> None:
        if mode not in modes.MODE_SPECS:
            raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(modes.MODES)}")
        if mode == self._mode and not force:
            return
        if not force:
            self._mode_options[self._mode] = self._read_options()
        old = self._mode
        self._mode = mode
        if self.mode_box.currentIndex() != modes.MODES.index(mode):
            self.mode_box.blockSignals(True)
            self.mode_box.setCurrentIndex(modes.MODES.index(mode))
            self.mode_box.blockSignals(False)
        self._write_options(self._mode_options[mode])
        self._update_rows()
        self.clear_message()
        self._refresh_hint()
        self.refresh_context()
        if mode != old:
            self.mode_changed.emit(mode)

    def _update_rows(self) -> None:
        ms = modes.spec(self._mode)
        used, opts = set(ms.params), set(ms.options)
        self.prompt_box.setVisible("prompt" in used)
        optional_image = ms.image == modes.IMAGE_OPTIONAL
        t2i = optional_image and not self.image_to_image.isChecked()
        visible = {
            "num_images": "num_images" in used, "steps": "steps" in used, "guidance": "guidance" in used,
            "strength": "strength" in used and ms.uses_strength(not t2i), "seed": "seed" in used,
            "grow": "grow" in opts, "feather": "feather" in opts, "masked_content": "masked_content" in opts,
            "depth_source": "depth_source" in opts, "noise_level": "noise_level" in opts, "tile": "tile" in opts,
            "image_to_image": optional_image, "size": "width" in opts and t2i,
            "backend": "backend" in opts, "color_match": "color_match" in opts,
        }
        for key, show in visible.items():
            lab, widget = self.rows[key]
            widget.setVisible(show)
            if lab is not None:
                lab.setVisible(show)
        self.options_group.setVisible(any(visible[k] for k in ("grow", "feather", "masked_content", "depth_source",
                                                               "noise_level", "tile", "image_to_image", "backend")))
        self.options_group.setTitle(f"{ms.label} options")
        self.generate_button.setText(ms.run_label)

    def _read_options(self) -> jobs.Options:
        base = self._mode_options.get(self._mode, jobs.Options())
        sized = "width" in modes.spec(self._mode).options
        return replace(base, grow=self.grow.value(), feather=self.feather.value(),
                       color_match=self.color_match.isChecked(), masked_content=self.masked_content.currentData(),
                       noise_level=self.noise_level.value(), tile=self.tile.value(),
                       width=self.width_box.value() if sized else base.width,
                       height=self.height_box.value() if sized else base.height,
                       backend=self.backend.currentData())

    def _write_options(self, o: jobs.Options) -> None:
        self.grow.setValue(o.grow)
        self.feather.setValue(o.feather)
        self.color_match.setChecked(o.color_match)
        self.masked_content.setCurrentIndex(max(0, self.masked_content.findData(o.masked_content)))
        self.noise_level.setValue(o.noise_level)
        self.tile.setValue(o.tile)
        if o.width and o.height:
            self.width_box.setValue(o.width)
            self.height_box.setValue(o.height)
        self.backend.setCurrentIndex(max(0, self.backend.findData(o.backend)))

    def read_params(self) -> jobs.Params:
        """The form's common parameters; raises DockError for a bad seed."""
        try:
            seed = self.seed.seed()
        except params.ValidationError as e:
            raise DockError(str(e), "seed") from None
        return jobs.Params(prompt=self.prompt.toPlainText(), negative_prompt=self.negative.toPlainText(),
                           num_images=self.num_images.value(), steps=self.steps.value(),
                           guidance=self.guidance.value(), strength=self.strength.value(), seed=seed,
                           weighted=self.weighted.isChecked())

    def spec(self) -> JobSpec:
        """What the form asks for, as a JobSpec (raises DockError)."""
        ms = modes.spec(self._mode)
        return JobSpec(self._mode, self.read_params(), self._read_options(),
                       depth_layer=self.depth_source.currentData() if "depth_source" in ms.options else None,
                       image_to_image=ms.image == modes.IMAGE_OPTIONAL and self.image_to_image.isChecked())

    def load_spec(self, mode: str, p: dict, o: dict) -> None:
        """Put a provenance record's (or saved) settings into the form."""
        known_o = {f.name for f in fields(jobs.Options)}
        options = replace(jobs.default_options(mode), **{k: v for k, v in (o or {}).items() if k in known_o})
        options = replace(options, output_format=None, output_linear=False)
        self._mode_options[mode] = options
        self.set_mode(mode, force=True)
        p = p or {}
        self.prompt.setPlainText(p.get("prompt", self.prompt.toPlainText()))
        self.negative.setPlainText(p.get("negative_prompt", self.negative.toPlainText()))
        self.weighted.setChecked(bool(p.get("weighted", self.weighted.isChecked())))
        for key, box in (("num_images", self.num_images), ("steps", self.steps), ("guidance", self.guidance),
                         ("strength", self.strength)):
            if isinstance(p.get(key), (int, float)):
                box.setValue(p[key])
        if "seed" in p:
            self.seed.set_seed(p["seed"])

    def _load_form(self) -> None:
        saved = self.session.settings.form or {}
        for mode, values in saved.items():
            if mode in self._mode_options and isinstance(values, dict):
                known = {f.name for f in fields(jobs.Options)}
                try:
                    self._mode_options[mode] = replace(jobs.default_options(mode),
                                                       **{k: v for k, v in values.items() if k in known})
                except TypeError:
                    pass

    def _save_form(self) -> None:
        self._mode_options[self._mode] = self._read_options()
        s = self.session.settings
        s.form = {m: {k: v for k, v in asdict(o).items() if k not in ("output_format", "output_linear")}
                  for m, o in self._mode_options.items()}
        try:
            s.save()
        except OSError as e:
            log.warning("cannot save the dock's settings: %s", e)

    def use_last_seed(self) -> None:
        if self.session.last_seed is None:
            self.show_message("No result yet: the seed of the last result is reused once there is one.", "info")
            return
        self.seed.set_seed(self.session.last_seed)

    # ------------------------------------------------------------------------------------ messages

    def show_message(self, text: str, kind: str = "error", parameter: str | None = None) -> None:
        self.last_message = (kind, text)
        self.message.setProperty("kind", kind)
        self.message.setText(text)
        self.message.setVisible(bool(text))
        self.message.style().unpolish(self.message)
        self.message.style().polish(self.message)
        self._mark_invalid(parameter)

    def clear_message(self) -> None:
        self.last_message = ("", "")
        self.message.hide()
        self._mark_invalid(None)

    def _widget_for(self, parameter: str | None):
        return {"prompt": self.prompt, "negative_prompt": self.negative, "num_images": self.num_images,
                "steps": self.steps, "guidance": self.guidance, "strength": self.strength, "seed": self.seed,
                "grow": self.grow, "feather": self.feather, "noise_level": self.noise_level, "tile": self.tile,
                "width": self.width_box, "height": self.height_box, "depth_source": self.depth_source,
                "depth": self.depth_source, "masked_content": self.masked_content, "backend": self.backend,
                "mode": self.mode_box}.get(parameter or "")

    def _mark_invalid(self, parameter: str | None) -> None:
        for w in self._invalid:
            w.setProperty("invalid", False)
            w.style().unpolish(w)
            w.style().polish(w)
        self._invalid = []
        widget = self._widget_for(parameter)
        if widget is not None:
            widget.setProperty("invalid", True)
            widget.style().unpolish(widget)
            widget.style().polish(widget)
            self._invalid.append(widget)

    def invalid_widgets(self) -> list:
        return list(self._invalid)

    # ------------------------------------------------------------------------------------ context

    def document(self) -> H.HostDocument | None:
        if self.host is None:
            return None
        try:
            return self.host.active_document()
        except H.HostError:
            return None

    def refresh_context(self) -> None:
        """The line saying what the job will work on (the layer, the selection)."""
        doc = self.document()
        if doc is None:
            self.context.setText("No document open." if self.host is not None else "")
            return
        try:
            layer = doc.active_layer()
            sel = doc.selection_bounds()
        except H.HostError as e:
            self.context.setText(str(e))
            return
        parts = [f"Layer: {layer.name} ({layer.color.describe(profile=False)})" if layer else "No layer selected"]
        if sel is not None:
            parts.append(f"selection {sel.w}×{sel.h} at {sel.x},{sel.y}")
        elif modes.spec(self._mode).selection != modes.SELECTION_OPTIONAL:
            parts.append("no selection: select an area first")
        else:
            parts.append("no selection: the whole layer")
        if modes.spec(self._mode).target == modes.TARGET_DOCUMENT:
            parts.append("the result opens as a new document")
        self.context.setText(" · ".join(parts))
        if "width" in modes.spec(self._mode).options and not self._mode_options[self._mode].width:
            self.size_from_canvas()

    def size_from_canvas(self) -> None:
        """Width and height of text-to-image: the canvas, in multiples of 8."""
        doc = self.document()
        if doc is None:
            return
        w, h = text_size(doc.size)
        self.width_box.setValue(w)
        self.height_box.setValue(h)
        if "width" in modes.spec(self._mode).options:
            self._mode_options[self._mode] = replace(self._mode_options[self._mode], width=w, height=h)

    def canvas_changed(self) -> None:
        """The editor's active document or view changed (Krita: DockWidget.canvasChanged)."""
        self.refresh_context()

    def showEvent(self, event):
        super().showEvent(event)
        self.refresh_context()
        if self.session.autostart and self.session.status.state == "stopped" and self.session.client is None:
            QTimer.singleShot(0, self.session.start_engine)

    # ------------------------------------------------------------------------------------ engine

    def _connect_session(self) -> None:
        s = self.session
        s.engine_changed.connect(self._refresh_engine)
        s.job_added.connect(self._on_job)
        s.job_changed.connect(self._on_job)
        s.job_preview.connect(self._on_preview)
        s.job_finished.connect(self._on_job_finished)
        s.results_added.connect(self._on_results)
        s.result_changed.connect(self._on_result_changed)

    def _refresh_engine(self) -> None:
        state, text, tip = engine_text(self.session)
        self.engine_bar.show_state(state, text, tip)
        self._refresh_hint()
        if self.session.capabilities is not None and not self._models_checked:
            self._models_checked = True
            self._start_where_models_are()

    def _start_where_models_are(self) -> None:
        """The engine's first word on its models: without SD2 inpainting, an untouched dock starts in
        Fill (remove object), the mode that gives a real result with no model at all."""
        caps = self.session.capabilities
        if self._mode != FIRST_MODE or self._own_jobs or NO_MODEL_MODE not in (caps.modes or ()):
            return
        if self.session.missing_models(FIRST_MODE):
            self.set_mode(NO_MODEL_MODE)
            self.show_message("Stable Diffusion 2 inpainting is not installed, so the dock starts in Fill (remove "
                              "object): it needs no model. Select something and press Fill selection.", "info")

    def _refresh_hint(self) -> None:
        missing = self.session.missing_models(self._mode)
        lines, tips = [], []
        for m in missing:
            title = m.get("title") or m.get("key")
            if m.get("optional"):
                lines.append(f"{title.split(' (')[0]} is not installed: Fill uses OpenCV (hover for LaMa).")
                tips.append(f"For LaMa, {m.get('hint')}")
            else:
                lines.append(f"{title} is not installed: {m.get('hint')}")
                tips.append(m.get("message") or "")
        self.model_hint.setText("\n".join(lines))
        self.model_hint.setToolTip("\n".join(t for t in tips if t))
        self.model_hint.setVisible(bool(lines))

    def restart_engine(self) -> None:
        from ..runtime import aio

        aio.spawn(self.session.restart_engine(), "restarting the engine")

    def open_engine_settings(self) -> None:
        dialog = EngineSettingsDialog(self.session.settings, self)
        dialog.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self.session.reconfigure(dialog.settings()))
        dialog.open()

    def _open_results_folder(self) -> None:
        folder = self.session.store.folder
        folder.mkdir(parents=True, exist_ok=True)
        QtGui.QDesktopServices.openUrl(QtCore.QUrl.fromLocalFile(str(folder)))

    # ------------------------------------------------------------------------------------ running

    def request(self, mode: str, origin: str = "menu") -> None:
        """An action asked for ``mode``: set it, then run at once (fill, depth, upscale) or wait for the
        prompt (inpaint, restyle, generate: the prompt gets the focus; Ctrl+Enter runs)."""
        self.set_mode(mode)
        if modes.spec(mode).run_at_once:
            self.generate()
        else:
            self.prompt.setFocus()
            self.prompt.selectAll()

    def generate(self):
        """Build the job from the form and the active document, and submit it.  Returns the JobItem,
        or None (the reason is in the message line)."""
        self.clear_message()
        if self.host is None:
            self.show_message("This dock is not attached to an editor.")
            return None
        t0 = time.perf_counter()
        try:
            spec = self.spec()
            doc = self.host.document()
            prepared = build(doc, None, spec)
        except H.UnsupportedColorModel as e:
            self.offer_converted_copy(e)
            return None
        except DockError as e:
            self.show_message(str(e), "error", e.parameter)
            return None
        except H.HostError as e:
            self.show_message(str(e), "error")
            return None
        prepare_ms = (time.perf_counter() - t0) * 1000
        self._save_form()
        item = self.session.submit(prepared, spec, prepare_ms)
        self._own_jobs.add(item.id)
        if item.final:
            self._on_job_finished(item)
        return item

    def cancel(self) -> None:
        job_id = self.queue.selected_job_id()
        items = {i.id: i for i in self.session.active_items()}
        target = items.get(job_id) if job_id else None
        if target is None:
            running = [i for i in items.values() if i.state == "running"]
            target = running[0] if running else (next(iter(items.values())) if items else None)
        if target is not None:
            self.session.cancel(target)

    def offer_converted_copy(self, error: H.UnsupportedColorModel) -> None:
        """The layer is not RGB: say so, and offer to work on a converted copy (never touching it)."""
        self.last_offer = error
        self.show_message(str(error), "warning")
        box = QtWidgets.QMessageBox(QtWidgets.QMessageBox.Icon.Information, "Diffusion Dock", str(error),
                                    QtWidgets.QMessageBox.StandardButton.Cancel, self)
        convert = box.addButton("Work on an RGB copy", QtWidgets.QMessageBox.ButtonRole.AcceptRole)
        box.setObjectName("convert_offer")
        box.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)

        def answered(button):
            if button is convert:
                self.open_converted_copy()

        box.buttonClicked.connect(answered)
        box.open()
        self.offer_box = box

    def open_converted_copy(self) -> None:
        doc = self.document()
        if doc is None or self.host is None:
            return
        try:
            copy = self.host.open_converted_copy(doc)
        except H.HostError as e:
            self.show_message(str(e), "error")
            return
        self.show_message(f'Opened "{copy.name}", converted to {copy.color.describe(profile=False)}: run the job '
                          f"there. The original document was not changed.", "info")
        self.refresh_context()

    # ------------------------------------------------------------------------------------ job events

    def _current_job(self):
        active = self.session.active_items()
        running = [i for i in active if i.state == "running"]
        return running[0] if running else (active[0] if active else None)

    def _on_job(self, item) -> None:
        self.queue.update_item(item)
        self.cancel_button.setEnabled(bool(self.session.active_items()))
        current = self._current_job()
        if current is None:
            self.progress.hide()
            return
        self.progress.show()
        if current.state == "running" and current.total:
            self.progress.setRange(0, current.total)
            self.progress.setValue(min(current.step, current.total))
        else:
            self.progress.setRange(0, 0)        # busy: loading, queued
        self.progress.setFormat(f"{current.phase_text} {current.step}/{current.total}" if current.total
                                else current.status_text())

    def _on_preview(self, item) -> None:
        if item.preview is not None and item is self._current_job():
            self.preview.setPixmap(QtGui.QPixmap.fromImage(qimages.scaled(item.preview, 128)))
            self.preview.show()

    def _on_job_finished(self, item) -> None:
        self._on_job(item)
        if not self.session.active_items():
            self.progress.hide()
            self.preview.hide()
        if item.id not in self._own_jobs:
            return
        if item.state == "failed":
            self.show_message(item.message or item.code, "error", item.parameter)
        elif item.state == "cancelled":
            self.show_message("Cancelled.", "info")
        elif item.state == "done" and item.message:
            self.show_message(f"Done, with a warning: {item.message}", "warning")
        if item.state == "done" and item.results:
            first = self.results.item_of(item.results[0].id)
            if first is not None:
                self.results.clearSelection()
                first.setSelected(True)
                self.results.setCurrentItem(first)

    # ------------------------------------------------------------------------------------ results

    def _thumbnail(self, rec):
        path = self.session.store.thumbnail_path(rec.id)
        if path is None:
            return None
        img = QtGui.QImage(str(path))
        return None if img.isNull() else img

    def _load_history(self) -> None:
        try:
            records = self.session.history()
        except OSError as e:
            log.warning("cannot read the results folder: %s", e)
            return
        self.results.add_records(records, self._thumbnail, at_top=False)
        broken = self.session.store.broken_summary()
        if broken:
            self.show_message(broken, "warning")

    def _on_results(self, records) -> None:
        self.results.add_records(records, self._thumbnail, at_top=True)

    def _on_result_changed(self, rec) -> None:
        if rec is not None:
            self.results.refresh_record(rec)
        self._update_result_buttons()

    def _on_result_selection(self) -> None:
        recs = self.results.selected_records()
        self._update_result_buttons()
        if len(recs) == 1:
            rec = recs[0]
            stats = rec.stats or {}
            timing = (f"\n{stats.get('seconds', 0):.1f} s · largest UI stall {stats['max_stall_ms']:.0f} ms"
                      if "max_stall_ms" in stats else "")
            self.result_info.setText(rec.name + timing + "".join(f"\n⚠ {w}" for w in rec.warnings))
            self.preview_result(rec)
        else:
            self.result_info.setText(f"{len(recs)} results selected" if recs else "")
            # Not at once: a selection moving from one result to another may pass through none, and
            # the preview layer is reused when the next one comes (in Krita each removal and
            # insertion of a layer is an undo step).
            QTimer.singleShot(0, self._clear_preview_unless_one_selected)

    def _clear_preview_unless_one_selected(self) -> None:
        if len(self.results.selected_records()) != 1:
            self.clear_result_preview()

    def _update_result_buttons(self) -> None:
        recs = self.results.selected_records()
        self.apply_button.setEnabled(bool(recs))
        self.discard_button.setEnabled(bool(recs))
        self.reuse_button.setEnabled(len(recs) == 1)
        self.apply_all_button.setEnabled(self.results.count() > 0)

    def _target(self, rec):
        """(document, source layer id, note) where a result goes; raises HostError."""
        doc = self.session.document_of(rec.job_id) or (self.host.active_document() if self.host else None)
        if doc is None:
            raise H.NoDocument()
        if tuple(doc.size) != tuple(rec.canvas):
            raise H.HostError(f"This result was made on a {rec.canvas[0]}×{rec.canvas[1]} canvas; the document "
                              f'"{doc.name}" is {doc.size[0]}×{doc.size[1]}.')
        src = rec.source_layer.get("id")
        try:
            doc.layer(src)
            return doc, src, ""
        except H.LayerNotFound:
            active = doc.active_layer()
            if active is None:
                raise H.HostError(f'The layer "{rec.source_layer.get("name")}" is gone: pick a layer to put the '
                                  f"result above.") from None
            return doc, active.id, f' (its layer "{rec.source_layer.get("name")}" is gone: placed above ' \
                                   f'"{active.name}")'

    def preview_result(self, rec) -> None:
        """Show a result on the canvas without committing it (a temporary locked layer)."""
        if rec.target != "layer" or self.host is None:
            self.clear_result_preview()
            return
        try:
            doc, src, _ = self._target(rec)
            if self._previewing is not None and not same_document(self._previewing[0], doc):
                self.clear_result_preview()
            # The document replaces its own preview (Krita reuses the layer: no undo step).
            doc.show_preview(src, self.session.patch(rec), rec.name)
            self._previewing = (doc, rec.id)
        except (H.HostError, OSError, KeyError, ValueError) as e:
            self.clear_result_preview()
            self.result_info.setText(f"{rec.name}\n(no preview: {e})")

    def clear_result_preview(self) -> None:
        if self._previewing is None:
            return
        doc, _ = self._previewing
        self._previewing = None
        self._clear_preview_of(doc)

    @staticmethod
    def _clear_preview_of(doc) -> None:
        try:
            if not doc.closed:
                doc.clear_preview()
        except H.HostError:
            pass

    def apply_results(self, records) -> list:
        """Apply results: each becomes a NEW layer above its source (or a new document); returns what
        was created (LayerInfo or HostDocument)."""
        created = []
        shown = self._previewing
        records = list(records)
        # The result on the canvas becomes the layer itself (in Krita, no undo step comes from the
        # preview); otherwise the preview goes before any layer is added.
        keep = shown is not None and any(r.id == shown[1] and r.target == "layer" for r in records)
        if keep:
            records.sort(key=lambda r: r.id != shown[1])
            self._previewing = None
        else:
            self.clear_result_preview()
        for rec in records:
            try:
                patch = self.session.patch(rec)
                if rec.target == "document":
                    color = self._color_of(rec)
                    title = f"{rec.document.rsplit('.', 1)[0]} {mode_label(rec.mode)}"
                    prov = {**rec.provenance, "source_layer": rec.source_layer, "source_document": rec.document}
                    new_doc = self.host.open_result_document(title, patch, rec.name, prov, color)
                    where = f'document "{new_doc.name}"'
                    created.append(new_doc)
                else:
                    doc, src, note = self._target(rec)
                    info = None
                    if keep and rec.id == shown[1]:
                        keep = False
                        info = doc.apply_preview(src, patch, rec.name, rec.provenance)
                        if info is None:
                            self._clear_preview_of(shown[0])
                    info = info or doc.add_result_layer(src, patch, rec.name, rec.provenance)
                    where = f'layer "{info.name}" in "{doc.name}"{note}'
                    created.append(info)
                    if note:
                        self.show_message(f"Applied{note}.", "info")
            except (H.HostError, OSError, KeyError, ValueError) as e:
                self.show_message(f"Could not apply {rec.name}: {e}", "error")
                if shown is not None:
                    self._clear_preview_of(shown[0])
                break
            self.session.mark_applied(rec, where)
        if keep:
            self._clear_preview_of(shown[0])
        self.refresh_context()
        return created

    def _color_of(self, rec) -> H.ColorInfo:
        depth = H.FORMAT_DEPTHS.get(rec.format)
        if depth is None:
            raise H.HostError(f"a {rec.format} result cannot become a document")
        color = rec.source_layer.get("color")
        if isinstance(color, list) and len(color) == 3 and tuple(color[:2]) == ("RGBA", depth):
            info = H.ColorInfo(*color)
            if info.linear == bool(rec.linear):
                return info
        return H.ColorInfo("RGBA", depth, H.LINEAR_PROFILE if rec.linear else H.SRGB_PROFILE)

    def apply_all(self) -> list:
        """Every result of one job not applied yet: the selected result's job, else the latest job."""
        selected = self.results.selected_records()
        recs = list(self.results.records.values())
        if not recs:
            return []
        job_id = selected[0].job_id if selected else max(recs, key=lambda r: r.created).job_id
        todo = sorted((r for r in recs if r.job_id == job_id and r.state != "applied"), key=lambda r: r.index)
        return self.apply_results(todo)

    def discard_results(self, records) -> None:
        self.clear_result_preview()
        for rec in records:
            self.session.discard(rec)
            self.results.remove_record(rec.id)
        self._update_result_buttons()

    def reuse_selected(self) -> None:
        recs = self.results.selected_records()
        if len(recs) == 1:
            prov = recs[0].provenance
            self.load_spec(prov.get("mode", recs[0].mode), prov.get("params") or {}, prov.get("options") or {})
            self.show_message(f"Settings of {recs[0].name} loaded: Generate re-runs it.", "info")

    def reuse_layer_settings(self) -> None:
        doc = self.document()
        layer = doc.active_layer() if doc is not None else None
        prov = doc.provenance(layer.id) if layer is not None else None
        if not prov:
            self.show_message("The active layer was not made by Diffusion Dock: it has no settings to reuse.", "info")
            return
        self.load_spec(prov.get("mode", self._mode), prov.get("params") or {}, prov.get("options") or {})
        self.show_message(f'Settings of "{layer.name}" loaded: Generate re-runs it.', "info")


def same_document(a, b) -> bool:
    """Two host documents on the same editor document (hosts make new wrappers as they go)."""
    if a is b:
        return True
    inner_a, inner_b = getattr(a, "doc", None), getattr(b, "doc", None)
    return inner_a is not None and inner_b is not None and (inner_a is inner_b or inner_a == inner_b)


class DepthSourceBox(QtWidgets.QComboBox):
    """Restyle's depth: estimated (auto), or one of the document's layers; the list is refreshed each
    time it opens."""

    def __init__(self, panel: DockPanel):
        super().__init__()
        self.setObjectName("depth_source")
        self.setSizeAdjustPolicy(QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(10)
        self._panel = panel
        self.setToolTip("Auto estimates the depth (DPT-hybrid); a layer gives it (white = near), e.g. a depth map "
                        "made by the Depth map mode and retouched")
        self.refresh()

    def refresh(self) -> None:
        current = self.currentData()
        self.blockSignals(True)
        self.clear()
        self.addItem("Auto (estimated)", None)
        doc = self._panel.document() if hasattr(self._panel, "host") else None
        if doc is not None:
            try:
                for layer in doc.layers():
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


__all__ = ["ID_ROLE", "DockPanel"]
