"""The dock panel, shared by Krita's docker and the standalone editor's dock area.

From top to bottom: the engine's status (with restart and a menu), the form (mode, what the job will
work on, prompts, parameters, the mode's options: ``form.JobForm``), a message line (validation
errors, the engine's errors, warnings), Generate/Cancel, the progress of the running job with a live
preview of its steps, the queue, and the results strip with Apply, Apply all, Discard and Reuse
settings (what they do to the document: ``session.results.ResultActions``).

The panel only lays these out and wires them.  It talks to the editor only through the host interface
(``host.Host``) and to the engine only through the shared ``DockSession``.  Nothing here blocks: jobs
are followed asynchronously and every result is saved to disk before it is shown.
"""

from __future__ import annotations

import logging
import time

from .. import host as H
from ..runtime import qimages
from ..runtime.coreapi import events, expand, modes
from ..runtime.qt import QShortcut, QtCore, QtGui, QTimer, QtWidgets, Signal
from ..session.job_builder import DockError, build
from ..session.live import LiveSession
from ..session.results import ResultActions
from .form import FIRST_MODE, JobForm
from .live_view import LiveBar
from .pages import DockPages
from .results_view import ResultsView
from .widgets import ID_ROLE, EngineSettingsDialog, EngineStatusBar, QueueList, engine_text

log = logging.getLogger(__name__)

NO_MODEL_MODE = "fill"       # where an untouched dock goes when the first mode's model is missing: needs none
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
        self.results_actions = ResultActions(session, host)
        self._own_jobs: set[str] = set()    # jobs this panel started (it previews their results)
        self.last_offer: H.UnsupportedColorModel | None = None
        self.last_message = ("", "")
        self._models_checked = False       # the engine's first capabilities were looked at
        self._setup_offered = False
        self._build()
        self.form.restore(self.session.settings.form or {})
        self.form.restore_models(self.session.settings.models)
        self._connect_session()
        self.set_mode(FIRST_MODE, force=True)
        self._refresh_engine()
        self.results_view.load_history()

    # ------------------------------------------------------------------------------------ building

    def _build(self) -> None:
        outer = QtWidgets.QVBoxLayout(self)
        outer.setContentsMargins(4, 4, 4, 4)
        self.pages = DockPages(self)                 # the form, the setup page, the models page
        outer.addWidget(self.pages)
        scroll = QtWidgets.QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QtWidgets.QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.pages.addWidget(scroll)
        body = QtWidgets.QWidget()
        scroll.setWidget(body)
        layout = QtWidgets.QVBoxLayout(body)
        layout.setContentsMargins(0, 0, 0, 0)
        self._build_engine(layout)
        self.form = JobForm(self.generate, self._layers, self._canvas_size)
        self.form.mode_changed.connect(self.mode_changed)
        self.form.growth_changed.connect(self.refresh_context)
        self.form.mode_box.currentIndexChanged.connect(lambda _i: self._mode_shown())
        self.form.reuse_seed.clicked.connect(self.use_last_seed)
        layout.addWidget(self.form)
        self._build_run(layout)
        self.live = LiveSession(self.session, self.results_actions, self.host, self.form.spec, self)
        self.live_bar = LiveBar(self.live, self.form)
        layout.insertWidget(layout.indexOf(self.message), self.live_bar)
        self.results_view = ResultsView(self.session, self.results_actions, self.show_message, self._reuse,
                                        self.refresh_context)
        layout.addWidget(self.results_view)
        layout.addStretch(1)
        v = self.results_view
        self.results, self.apply_button, self.apply_all_button = v.strip, v.apply_button, v.apply_all_button
        self.discard_button, self.reuse_button, self.result_info = v.discard_button, v.reuse_button, v.info

    def _build_engine(self, layout) -> None:
        self.engine_bar = EngineStatusBar()
        self.engine_bar.restart_requested.connect(self.restart_engine)
        menu = self.engine_bar.menu
        menu.addAction("Engine settings…", self.open_engine_settings)
        menu.addAction("Models…", self.pages.open_models)
        menu.addAction("Setup and repair…", self.pages.open_setup)
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

    def _build_run(self, layout) -> None:
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

    # ------------------------------------------------------------------------------------ modes

    @property
    def mode(self) -> str:
        return self.form.mode

    def set_mode(self, mode: str, force: bool = False) -> None:
        self.form.set_mode(mode, force)
        self._mode_shown()

    def _mode_shown(self) -> None:
        self.generate_button.setText(self.form.mode_spec.run_label)
        self.live_bar.setVisible(self.form.mode_spec.live)
        if not self.form.mode_spec.live:
            self.live.stop()
        self.clear_message()
        self._refresh_hint()
        self.refresh_context()

    def use_last_seed(self) -> None:
        if self.session.last_seed is None:
            self.show_message("No result yet: the seed of the last result is reused once there is one.", "info")
            return
        self.form.seed.set_seed(self.session.last_seed)

    def _save_form(self) -> None:
        s = self.session.settings
        s.form = self.form.saved_options()
        s.models = self.form.model_choices()
        try:
            s.save()
        except OSError as e:
            log.warning("cannot save the dock's settings: %s", e)

    # ------------------------------------------------------------------------------------ messages

    def show_message(self, text: str, kind: str = "error", parameter: str | None = None) -> None:
        self.last_message = (kind, text)
        self.message.setProperty("kind", kind)
        self.message.setText(text)
        self.message.setVisible(bool(text))
        self.message.style().unpolish(self.message)
        self.message.style().polish(self.message)
        self.form.mark_invalid(parameter)

    def clear_message(self) -> None:
        self.last_message = ("", "")
        self.message.hide()
        self.form.mark_invalid(None)

    def invalid_widgets(self) -> list:
        return self.form.invalid_widgets()

    # ------------------------------------------------------------------------------------ context

    def document(self) -> H.HostDocument | None:
        if self.host is None:
            return None
        try:
            return self.host.active_document()
        except H.HostError:
            return None

    def _layers(self) -> list:
        doc = self.document()
        return doc.layers() if doc is not None else []

    def _canvas_size(self):
        doc = self.document()
        return doc.size if doc is not None else None

    def refresh_context(self) -> None:
        """The line saying what the job will work on (the layer, the selection)."""
        doc, context = self.document(), self.form.context
        if doc is None:
            context.setText("No document open." if self.host is not None else "")
            return
        try:
            layer = doc.active_layer()
            sel = doc.selection_bounds()
        except H.HostError as e:
            context.setText(str(e))
            return
        ms = self.form.mode_spec
        parts = [f"Layer: {layer.name} ({layer.color.describe(profile=False)})" if layer else "No layer selected"]
        if ms.grows_canvas:
            (w, h), growth = doc.size, expand.Growth.of(self.form.read_options())
            nw, nh = growth.canvas((w, h))
            parts.append(f"canvas {w}×{h} → {nw}×{nh}" if not growth.empty else "set the px to add")
            if sel is not None:
                parts.append("the selection is not used")
        elif sel is not None:
            parts.append(f"selection {sel.w}×{sel.h} at {sel.x},{sel.y}")
        elif ms.selection != modes.SELECTION_OPTIONAL:
            parts.append("no selection: select an area first")
        else:
            parts.append("no selection: the whole layer")
        if ms.target == modes.TARGET_DOCUMENT:
            parts.append("the result opens as a new document")
        context.setText(" · ".join(parts))
        if self.form.needs_size():
            self.form.size_from_canvas()

    def canvas_changed(self) -> None:
        """The editor's active document or view changed (Krita: DockWidget.canvasChanged)."""
        self.refresh_context()
        self.live.check()

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

    def _refresh_engine(self) -> None:
        state, text, tip = engine_text(self.session)
        self.engine_bar.show_state(state, text, tip)
        self._refresh_hint()
        self.form.set_installed(self.session.capabilities.models if self.session.capabilities else [])
        if self.session.status.code == "engine_not_found" and not self._setup_offered:
            self._setup_offered = True       # once: Back returns to the form, the menu opens it again
            self.pages.open_setup()
        if self.session.capabilities is not None and not self._models_checked:
            self._models_checked = True
            self._start_where_models_are()

    def _start_where_models_are(self) -> None:
        """The engine's first word on its models: without SD2 inpainting, an untouched dock starts in
        Fill (remove object), the mode that gives a real result with no model at all."""
        caps = self.session.capabilities
        if self.mode != FIRST_MODE or self._own_jobs or NO_MODEL_MODE not in (caps.modes or ()):
            return
        if self.session.missing_models(FIRST_MODE):
            self.set_mode(NO_MODEL_MODE)
            self.show_message("Stable Diffusion 2 inpainting is not installed, so the dock starts in Fill (remove "
                              "object): it needs no model. Select something and press Fill selection.", "info")

    def _refresh_hint(self) -> None:
        missing = self.session.missing_models(self.mode)
        lines, tips = [], []
        for m in missing:
            title = m.get("title") or m.get("key")
            if m.get("optional"):
                lines.append(f"{title.split(' (')[0]} is not installed: Fill copies patches (hover for LaMa).")
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
        """An action asked for ``mode``: set it, then run at once (modes that need no prompt) or wait for
        the prompt (it gets the focus; Ctrl+Enter runs)."""
        self.set_mode(mode)
        if modes.spec(mode).run_at_once:
            self.generate()
        else:
            self.form.prompt.setFocus()
            self.form.prompt.selectAll()

    def generate(self):
        """Build the job from the form and the active document, and submit it.  Returns the JobItem,
        or None (the reason is in the message line)."""
        self.clear_message()
        if self.host is None:
            self.show_message("This dock is not attached to an editor.")
            return None
        t0 = time.perf_counter()
        try:
            spec = self.form.spec()
            prepared = build(self.host.document(), None, spec)
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
            running = [i for i in items.values() if i.state is events.JobState.RUNNING]
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
        box.buttonClicked.connect(lambda button: self.open_converted_copy() if button is convert else None)
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
        running = [i for i in active if i.state is events.JobState.RUNNING]
        return running[0] if running else (active[0] if active else None)

    def _on_job(self, item) -> None:
        self.queue.update_item(item)
        self.cancel_button.setEnabled(bool(self.session.active_items()))
        current = self._current_job()
        if current is None:
            self.progress.hide()
            return
        self.progress.show()
        if current.state is events.JobState.RUNNING and current.total:
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
        if item.state is events.JobState.FAILED:
            self.show_message(item.message or item.code, "error", item.parameter)
        elif item.state is events.JobState.CANCELLED:
            self.show_message("Cancelled.", "info")
        elif item.state is events.JobState.DONE and item.message:
            self.show_message(f"Done, with a warning: {item.message}", "warning")
        if item.state is events.JobState.DONE:
            self.results_view.select_first_of(item.results)

    # ------------------------------------------------------------------------------------ results

    def apply_results(self, records) -> list:
        """Apply results: each becomes a NEW layer above its source (or a new document); returns what
        was created (LayerInfo or HostDocument)."""
        return self.results_view.apply(records)

    def apply_all(self) -> list:
        return self.results_view.apply_all()

    def discard_results(self, records) -> None:
        self.results_view.discard(records)

    def clear_result_preview(self) -> None:
        self.results_actions.clear_preview()

    def reuse_selected(self) -> None:
        self.results_view.reuse_selected()

    def _reuse(self, prov: dict, name: str) -> None:
        self.load_spec(prov.get("mode", self.mode), prov.get("params") or {}, prov.get("options") or {})
        self.show_message(f"Settings of {name} loaded: Generate re-runs it.", "info")

    def reuse_layer_settings(self) -> None:
        doc = self.document()
        layer = doc.active_layer() if doc is not None else None
        prov = doc.provenance(layer.id) if layer is not None else None
        if not prov:
            self.show_message("The active layer was not made by Diffusion Dock: it has no settings to reuse.", "info")
            return
        self._reuse(prov, f'"{layer.name}"')

    def load_spec(self, mode: str, p: dict, o: dict) -> None:
        """Put a provenance record's (or saved) settings into the form."""
        self.form.load_spec(mode, p, o)
        self._mode_shown()


__all__ = ["ID_ROLE", "DockPanel"]
