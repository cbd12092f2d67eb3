"""Small widgets of the dock panel: number inputs built from the engine's ranges, the seed field, the
prompt editors (Ctrl+Enter runs the job), the engine status line, the queue, the results strip and
the engine settings dialog."""

from __future__ import annotations

from pathlib import Path

from ..runtime import qimages
from ..runtime.coreapi import catalog, expand, params, samplers
from ..runtime.qt import QEvent, QObject, Qt, QtCore, QtGui, QtWidgets, Signal
from ..session.settings import Settings

RANGES = params.RANGES
ID_ROLE = Qt.ItemDataRole.UserRole


# ------------------------------------------------------------------------------------------- inputs

def int_spin(name: str, suffix: str = "", step: int = 1) -> QtWidgets.QSpinBox:
    """A spin box limited to the engine's range for ``name``."""
    r = RANGES[name]
    box = QtWidgets.QSpinBox()
    box.setObjectName(name)
    box.setRange(int(r.low), int(r.high))
    box.setSingleStep(step)
    if r.default is not None:
        box.setValue(int(r.default))
    if suffix or r.unit:
        box.setSuffix(f" {suffix or r.unit}")
    box.setToolTip(f"{name.replace('_', ' ')}: {r.describe()}")
    box.setKeyboardTracking(False)
    return box


def float_spin(name: str, step: float, decimals: int) -> QtWidgets.QDoubleSpinBox:
    r = RANGES[name]
    box = QtWidgets.QDoubleSpinBox()
    box.setObjectName(name)
    box.setRange(r.low, r.high)
    box.setSingleStep(step)
    box.setDecimals(decimals)
    if r.default is not None:
        box.setValue(r.default)
    box.setToolTip(f"{name.replace('_', ' ')}: {r.describe()}")
    box.setKeyboardTracking(False)
    return box


class MultipleOf8Spin(QtWidgets.QSpinBox):
    """Width and height: the engine's range, in steps of 8; typed values snap to a multiple of 8."""

    def __init__(self, name: str):
        super().__init__()
        r = RANGES[name]
        self.setObjectName(name)
        self.setRange(int(r.low), int(r.high))
        self.setSingleStep(8)
        self.setSuffix(" px")
        self.setValue(int(r.default or 512))
        self.setToolTip(f"{name}: multiples of 8 in {r.describe()}")
        self.setKeyboardTracking(False)
        self.editingFinished.connect(self._snap)

    def _snap(self) -> None:
        v = self.value()
        if v % 8:
            self.setValue(max(self.minimum(), v - v % 8))


class SeedEdit(QtWidgets.QLineEdit):
    """The seed: empty = random; digits only, checked against the engine's range."""

    def __init__(self):
        super().__init__()
        self.setObjectName("seed")
        self.setPlaceholderText("random")
        r = RANGES["seed"]
        self.setToolTip(f"Seed {r.describe()}; empty = a new random seed each time (the seed used is in the "
                        f"result's name)")
        self.setValidator(QtGui.QRegularExpressionValidator(QtCore.QRegularExpression(r"\d{0,10}"), self))

    def seed(self) -> int | None:
        """The seed, None for random.  Raises ValidationError when out of range."""
        text = self.text().strip()
        if not text:
            return None
        return params.check("seed", int(text))

    def set_seed(self, seed: int | None) -> None:
        self.setText("" if seed is None else str(seed))


class RunKeys(QObject):
    """Ctrl+Enter (or Ctrl+Return) in a text editor runs the job instead of adding a line."""

    def __init__(self, run, parent=None):
        super().__init__(parent)
        self._run = run

    def eventFilter(self, obj, event):
        if event.type() == QEvent.Type.KeyPress and event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) \
                and event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            self._run()
            return True
        return False


def prompt_edit(name: str, placeholder: str, lines: int) -> QtWidgets.QPlainTextEdit:
    edit = QtWidgets.QPlainTextEdit()
    edit.setObjectName(name)
    edit.setPlaceholderText(placeholder)
    edit.setTabChangesFocus(True)
    line = edit.fontMetrics().lineSpacing()
    edit.setMinimumHeight(line * lines + 12)
    edit.setMaximumHeight(line * (lines + 2) + 12)
    edit.setSizePolicy(QtWidgets.QSizePolicy.Policy.Expanding, QtWidgets.QSizePolicy.Policy.Maximum)
    return edit


def compact_combo(name: str) -> QtWidgets.QComboBox:
    """A combo box that does not widen the dock to its longest entry."""
    box = QtWidgets.QComboBox()
    box.setObjectName(name)
    box.setSizeAdjustPolicy(QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    box.setMinimumContentsLength(10)
    return box


VAE_LABELS = {"full": "full VAE (best)", "tiny": "tiny TAESD (fast)"}


def vae_combo() -> QtWidgets.QComboBox:
    """The autoencoder (``jobs.VAES``): the model's full VAE, or the tiny TAESD."""
    box = compact_combo("vae")
    for key, label in VAE_LABELS.items():
        box.addItem(label, key)
    box.setToolTip("What turns pixels into latents and back: the model's full VAE, or the tiny "
                   "autoencoder TAESD (much faster, a little softer; when it is installed)")
    return box


def growth_box(on_change) -> tuple[QtWidgets.QWidget, dict]:
    """Expand: px added on each side, laid out around the canvas they grow; (the box, name → spin box)."""
    box = QtWidgets.QWidget()
    box.setObjectName("expand")
    grid = QtWidgets.QGridLayout(box)
    grid.setContentsMargins(0, 0, 0, 0)
    spins = {}
    for name, (row, col) in zip(expand.FIELDS, ((1, 0), (0, 1), (1, 2), (2, 1))):
        spin = int_spin(name, step=64)
        spin.setToolTip(f"px added on the {name.split('_')[1]} ({params.RANGES[name].describe()})")
        spin.valueChanged.connect(lambda _v: on_change())
        grid.addWidget(spin, row, col)
        spins[name] = spin
    canvas = QtWidgets.QLabel("canvas")
    canvas.setObjectName("expand_canvas")
    grid.addWidget(canvas, 1, 1)
    return box, spins


def sampler_combo() -> QtWidgets.QComboBox:
    """The sampler (``samplers.SAMPLER_CHOICES``): Auto is the model's catalogue default."""
    box = compact_combo("sampler")
    defaults = sorted({(samplers.label(s.sampler), s.steps) for s in catalog.CATALOG.values()
                       if s.sampler != samplers.MODEL})
    auto = ", ".join(f"{name}, {steps} steps" for name, steps in defaults)
    box.addItem(f"Auto ({auto})", samplers.AUTO)
    for s in samplers.SAMPLERS:
        box.addItem(s.label, s.key)
        box.setItemData(box.count() - 1, s.note, Qt.ItemDataRole.ToolTipRole)
    box.setItemData(0, "The model's recommended sampler and step count (the catalogue's choice)",
                    Qt.ItemDataRole.ToolTipRole)
    box.setToolTip("How the noise is removed, step by step. The seed gives the same image again with the same "
                   "sampler and steps")
    return box


# ------------------------------------------------------------------------------------------- engine status

STATE_COLOURS = {"ready": "#3a3", "starting": "#d90", "restarting": "#d90", "stopped": "#888", "dead": "#c33"}


class EngineStatusBar(QtWidgets.QWidget):
    restart_requested = Signal()
    settings_requested = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.dot = QtWidgets.QLabel("●")
        self.label = QtWidgets.QLabel("Engine: not started")
        self.label.setObjectName("engine_status")
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.restart = QtWidgets.QToolButton()
        self.restart.setObjectName("engine_restart")
        self.restart.setText("Restart")
        self.restart.setToolTip("Restart the engine (running jobs are cancelled)")
        self.restart.clicked.connect(self.restart_requested)
        self.menu_button = QtWidgets.QToolButton()
        self.menu_button.setObjectName("dock_menu")
        self.menu_button.setText("⋯")
        self.menu_button.setPopupMode(QtWidgets.QToolButton.ToolButtonPopupMode.InstantPopup)
        self.menu = QtWidgets.QMenu(self)
        self.menu_button.setMenu(self.menu)
        layout.addWidget(self.dot)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.restart)
        layout.addWidget(self.menu_button)

    def show_state(self, state: str, text: str, tooltip: str = "") -> None:
        self.dot.setStyleSheet(f"color: {STATE_COLOURS.get(state, '#888')}")
        self.label.setText(text)
        self.label.setToolTip(tooltip)


COMPILE_WORDS = {"compiling": "compiling for", "compile_paused": "compiling paused while jobs run, for",
                 "compiled": "compiled for", "compile_failed": "compiling failed for",
                 "compile_skipped": "not compiled for"}
COMPILING = ("compiling", "compile_paused")


def engine_text(session) -> tuple[str, str, str]:
    """(state, one line, tooltip) describing the session's engine."""
    st = session.status
    where = "remote engine " + session.settings.url if session.settings.engine == "remote" else "engine"
    caps = session.capabilities
    if st.state == "ready":
        loading = session.loading_models()
        outcomes = session.compile_outcomes(tuple(COMPILE_WORDS))
        states = {state for _, state, _ in outcomes}
        if loading:
            text = f"Loading {', '.join(loading)}…"
        else:
            text = f"Ready · {caps.device} {caps.dtype}" if caps is not None else "Ready · looking for models…"
            if states & set(COMPILING):
                # the UNet compiles while no job runs; jobs run meanwhile, eagerly
                text += " · compiling…" + (" (paused while jobs run)" if states & set(COMPILING) == {"compile_paused"}
                                           else "")
            elif states and states <= {"compiled"}:
                text += " · compiled"
            elif states:
                text += " · UNet not compiled"
        tip = ""
        if caps is not None:
            tip = f"{where}, engine {caps.engine_version}: {caps.device} {caps.dtype} ({caps.device_reason})"
        tip = "\n".join([tip, *(f"UNet of {model}: {COMPILE_WORDS[state]} {message}"
                                for model, state, message in outcomes)]).strip()
        view = getattr(session, "cluster", None)
        if isinstance(view, dict):
            lines = cluster_lines(view)
            text += f" · {lines[0]}"
            tip = "\n".join([tip, *lines]).strip()
        return "ready", text, tip
    if st.state == "starting":
        return "starting", f"Starting the {where}…", ""
    if st.state == "restarting":
        return "restarting", f"Restarting the {where}: {st.reason}", st.reason
    if st.state == "dead":
        return "dead", f"Engine stopped: {st.reason}", st.reason
    return "stopped", "Engine: starts with the first job", ""


def cluster_lines(view: dict) -> list[str]:
    """A cluster gateway's view in words: the first line fits the status bar, the rest the tooltip."""
    reps = view.get("replicas") if isinstance(view.get("replicas"), dict) else {}
    running, starting = reps.get("running") or 0, reps.get("starting") or 0
    first = f"cluster of {running} GPU worker{'s' if running != 1 else ''}" + (f" (+{starting} starting)"
                                                                                  if starting else "")
    lines = [first]
    models = view.get("models") if isinstance(view.get("models"), dict) else {}
    if models:
        lines.append("Models loaded: " + ", ".join(f"{name} ×{n}" for name, n in sorted(models.items())))
    mine = view.get("mine") if isinstance(view.get("mine"), dict) else {}
    queued_all = view.get("queued") or 0
    own = f"Your jobs: {mine.get('running') or 0} running, {mine.get('queued') or 0} queued"
    if mine.get("next"):
        own += f" (next at place {mine['next']} of {queued_all})"
    lines.append(own + f"; {queued_all} waiting in all")
    if view.get("artist"):
        lines.append(f"Signed in as {view['artist']}{' (admin)' if view.get('admin') else ''}")
    return lines


# ------------------------------------------------------------------------------------------- queue

class QueueList(QtWidgets.QListWidget):
    """Queued, running and recently finished jobs, newest at the bottom."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("queue")
        self.setMaximumHeight(110)
        self.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        self._rows: dict[str, QtWidgets.QListWidgetItem] = {}

    def update_item(self, job) -> None:
        row = self._rows.get(job.id)
        if row is None:
            row = QtWidgets.QListWidgetItem()
            row.setData(ID_ROLE, job.id)
            self.addItem(row)
            self._rows[job.id] = row
            while self.count() > 12:
                old = self.takeItem(0)
                self._rows.pop(old.data(ID_ROLE), None)
        mark = {"queued": "⏳", "running": "▶", "done": "✓", "failed": "✗", "cancelled": "⊘"}.get(job.state, "")
        row.setText(f"{mark} {job.summary} — {job.status_text()}")
        tip = job.message or job.status_text()
        if job.final and job.handle is not None:
            tip += f"\n{job.stats_text()}"
        row.setToolTip(tip)
        self.scrollToItem(row)

    def selected_job_id(self) -> str | None:
        items = self.selectedItems()
        return items[0].data(ID_ROLE) if items else None


# ------------------------------------------------------------------------------------------- results

class ResultsStrip(QtWidgets.QListWidget):
    """Thumbnails of the results, newest first.  Each item carries the StoredResult's id."""

    ICON = 88

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("results")
        self.setViewMode(QtWidgets.QListView.ViewMode.IconMode)
        self.setFlow(QtWidgets.QListView.Flow.LeftToRight)
        self.setWrapping(True)
        self.setMovement(QtWidgets.QListView.Movement.Static)
        self.setResizeMode(QtWidgets.QListView.ResizeMode.Adjust)
        self.setIconSize(QtCore.QSize(self.ICON, self.ICON))
        self.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setMinimumHeight(self.ICON + 36)
        self.records: dict[str, object] = {}

    def add_records(self, records, thumbnails, at_top: bool = True) -> None:
        """``records`` newest first; ``thumbnails(rec)`` → QImage or None."""
        for offset, rec in enumerate(records):
            if rec.id in self.records:
                continue
            item = QtWidgets.QListWidgetItem()
            item.setData(ID_ROLE, rec.id)
            img = thumbnails(rec)
            if img is None:
                img = qimages.placeholder(rec.format.split("_")[-1])
            pixmap = QtGui.QPixmap.fromImage(img)
            icon = QtGui.QIcon(pixmap)
            icon.addPixmap(pixmap, QtGui.QIcon.Mode.Selected)      # no tint: the colours are the result
            item.setIcon(icon)
            if at_top:
                self.insertItem(offset, item)
            else:
                self.addItem(item)
            self.records[rec.id] = rec
            self.refresh_record(rec)

    def item_of(self, rid: str):
        for i in range(self.count()):
            if self.item(i).data(ID_ROLE) == rid:
                return self.item(i)
        return None

    def refresh_record(self, rec) -> None:
        self.records[rec.id] = rec
        item = self.item_of(rec.id)
        if item is None:
            return
        seed = f"seed {rec.seed}" if rec.seed is not None else rec.mode
        item.setText(("✓ " if rec.state == "applied" else "") + seed)
        lines = [rec.name, f"{rec.width}×{rec.height} at {rec.x},{rec.y} · {rec.format}"
                 f"{' linear' if rec.linear else ''}", f"from {rec.source_layer.get('name', '?')} in {rec.document}"]
        if rec.model:
            lines.append(f"model {rec.model}")
        if rec.target == "document":
            lines.append("opens as a new document")
        if rec.state == "applied":
            lines.append(f"applied: {rec.applied_to}")
        lines += [f"⚠ {w}" for w in rec.warnings]
        if rec.stats.get("max_stall_ms") is not None:
            lines.append(f"took {rec.stats.get('seconds', 0):.1f} s; largest UI stall {rec.stats['max_stall_ms']:.0f} ms")
        item.setToolTip("\n".join(lines))

    def remove_record(self, rid: str) -> None:
        item = self.item_of(rid)
        if item is not None:
            self.takeItem(self.row(item))
        self.records.pop(rid, None)

    def selected_records(self) -> list:
        return [self.records[i.data(ID_ROLE)] for i in self.selectedItems() if i.data(ID_ROLE) in self.records]


# ------------------------------------------------------------------------------------------- settings dialog

class EngineSettingsDialog(QtWidgets.QDialog):
    """Local engine (its Python, device) or a remote engine (URL, token, CA file)."""

    def __init__(self, settings: Settings, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Diffusion Dock engine")
        self.local = QtWidgets.QRadioButton("Local engine (a child process of this editor)")
        self.remote = QtWidgets.QRadioButton("Remote engine (python -m core serve)")
        (self.remote if settings.engine == "remote" else self.local).setChecked(True)
        self.python = QtWidgets.QLineEdit(settings.python)
        self.python.setPlaceholderText("found automatically (engine.json or the checkout's .venv)")
        self.device = QtWidgets.QComboBox()
        for d in ("", "cuda", "mps", "cpu"):
            self.device.addItem(d or "automatic", d)
        self.device.setCurrentIndex(max(0, self.device.findData(settings.device)))
        self.compile = QtWidgets.QCheckBox("Compile the UNet (faster steps; minutes of compiling for each new "
                                           "image size, only while no job runs)")
        self.compile.setToolTip("The engine compiles the UNet with torch.compile where a C++ compiler (CPU) or "
                                "triton (GPU) is found, kept in its cache across restarts; jobs never wait for "
                                "it. Off: never (also DD_COMPILE=0).")
        self.compile.setChecked(bool(settings.compile_unet))
        self.url = QtWidgets.QLineEdit(settings.url)
        self.url.setPlaceholderText("tls://server:7860")
        self.token = QtWidgets.QLineEdit(settings.token)
        self.token.setEchoMode(QtWidgets.QLineEdit.EchoMode.Password)
        self.cafile = QtWidgets.QLineEdit(settings.cafile)
        self.cafile.setPlaceholderText("the server's certificate, when self-signed")
        form = QtWidgets.QFormLayout()
        form.addRow(self.local)
        form.addRow("Engine Python", self.python)
        form.addRow("Device", self.device)
        form.addRow(self.compile)
        form.addRow(self.remote)
        form.addRow("URL", self.url)
        form.addRow("Token", self.token)
        form.addRow("CA file", self.cafile)
        buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.StandardButton.Save
                                             | QtWidgets.QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(buttons)
        self._base = settings

    def settings(self) -> Settings:
        s = Settings(**{**self._base.__dict__})
        s.engine = "remote" if self.remote.isChecked() else "local"
        s.python = self.python.text().strip()
        s.device = self.device.currentData() or ""
        s.compile_unet = self.compile.isChecked()
        s.url = self.url.text().strip()
        s.token = self.token.text().strip()
        s.cafile = str(Path(self.cafile.text().strip()).expanduser()) if self.cafile.text().strip() else ""
        return s
