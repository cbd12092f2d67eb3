"""The setup page: what the dock shows instead of its form when no engine environment exists, and what
*Setup and repair…* in the dock's menu opens later.

What was detected (GPU and its memory, or the CPU and bf16), the torch build, where the engine goes
(changeable), an optional folder of wheel files to install from offline, disk needed and free; one
Install button; then a bar per step and per model file (MB/s, time left), the errors with their fix line,
a log to expand, and Cancel.  The installer runs as a child process (``session.setup_runner``); nothing
here waits on it.
"""

from __future__ import annotations

from pathlib import Path

from ..runtime.qt import QtCore, QtWidgets, Signal
from ..session import setup_runner as R
from ..session.setup_runner import STEP_LABELS, STEPS, SetupRun, SetupUnavailable


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


def _folder_row(field, button_text: str, choose) -> QtWidgets.QHBoxLayout:
    """A folder's text field with the button that opens a folder dialog (``choose``) beside it."""
    button = QtWidgets.QToolButton()
    button.setText(button_text)
    button.clicked.connect(choose)
    row = QtWidgets.QHBoxLayout()
    row.addWidget(field, 1)
    row.addWidget(button)
    return row


class SetupPage(QtWidgets.QWidget):
    installed = Signal(str)      # the engine's Python, after a run that ended ready
    closed = Signal()

    def __init__(self, venv: Path | None = None, models: list[str] | None = None, parent=None, *,
                 python: str | None = None, env: dict | None = None, plugin_dir: Path | None = None):
        super().__init__(parent)
        self.setObjectName("setup_page")
        self._plugin_dir = Path(plugin_dir) if plugin_dir else R.PACKAGE_DIR
        self._recorded = R.recorded(self._plugin_dir)     # Repair starts from the last setup's choices
        self.venv = Path(venv or self._recorded.venv or R.default_venv())
        self.models = list(models or ["sd2-inpainting"])
        self._python, self._env = python, env
        self.run: SetupRun | None = None
        self.plan_run: SetupRun | None = None
        self._file_bars: dict[str, QtWidgets.QProgressBar] = {}
        self._update_timer = QtCore.QTimer(self)
        self._update_timer.setSingleShot(True)
        self._update_timer.setInterval(200)
        self._update_timer.timeout.connect(self._update)
        self._build()

    def _build(self) -> None:
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        title = QtWidgets.QLabel("<b>Set up Diffusion Dock</b>")
        lay.addWidget(title)
        self.intro = QtWidgets.QLabel("The engine (Python, PyTorch, the model) is installed once, here. "
                                      "It runs beside Krita; your images never leave this computer.")
        self.intro.setWordWrap(True)
        lay.addWidget(self.intro)
        form = QtWidgets.QFormLayout()
        self.hardware, self.torch, self.disk = (QtWidgets.QLabel("looking…") for _ in range(3))
        for w, name in ((self.hardware, "hardware"), (self.torch, "torch"), (self.disk, "disk")):
            w.setObjectName(name)
            w.setWordWrap(True)
        self.location = QtWidgets.QLineEdit(str(self.venv))
        self.location.setObjectName("location")
        loc = _folder_row(self.location, "Change…", self._choose_location)
        self.wheels = QtWidgets.QLineEdit()
        self.wheels.setObjectName("wheels")
        self.wheels.setPlaceholderText("empty: download from the package index")
        self.wheels.setText(str(self._recorded.wheels or ""))
        self.wheels.setToolTip("A folder of .whl files (PyTorch and the engine's packages) to install from "
                               "without internet: pip --no-index --find-links FOLDER")
        self.wheels.editingFinished.connect(self.refresh_plan)
        whl = _folder_row(self.wheels, "Choose…", self._choose_wheels)
        form.addRow("Detected", self.hardware)
        form.addRow("PyTorch", self.torch)
        form.addRow("Location", loc)
        form.addRow("Wheel folder", whl)
        form.addRow("Disk", self.disk)
        lay.addLayout(form)
        buttons = QtWidgets.QHBoxLayout()
        self.install_button = QtWidgets.QPushButton("Install")
        self.install_button.setObjectName("install")
        self.install_button.clicked.connect(self.install)
        self.cancel_button = QtWidgets.QPushButton("Cancel")
        self.cancel_button.setObjectName("setup_cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.back_button = QtWidgets.QPushButton("Back")
        self.back_button.setToolTip("Back to the dock's form")
        self.back_button.clicked.connect(self.closed)
        buttons.addWidget(self.install_button, 2)
        buttons.addWidget(self.cancel_button, 1)
        buttons.addWidget(self.back_button, 1)
        lay.addLayout(buttons)
        self.step_bars: dict[str, QtWidgets.QProgressBar] = {}
        steps = QtWidgets.QFormLayout()
        for s in STEPS:
            bar = QtWidgets.QProgressBar()
            bar.setObjectName(f"step_{s}")
            bar.setRange(0, 1)
            bar.setValue(0)
            bar.setFormat("waiting")
            self.step_bars[s] = bar
            steps.addRow(STEP_LABELS[s], bar)
        lay.addLayout(steps)
        self.files_box = QtWidgets.QFormLayout()
        lay.addLayout(self.files_box)
        self.error = QtWidgets.QLabel()
        self.error.setObjectName("setup_error")
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #d33;")
        self.error.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error.hide()
        lay.addWidget(self.error)
        self.log_toggle = QtWidgets.QToolButton()
        self.log_toggle.setText("Show the log")
        self.log_toggle.setCheckable(True)
        self.log_view = QtWidgets.QPlainTextEdit()
        self.log_view.setObjectName("setup_log")
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(R.LOG_LINES)
        self.log_view.hide()
        self.log_toggle.toggled.connect(self._show_log)
        lay.addWidget(self.log_toggle)
        lay.addWidget(self.log_view)
        lay.addStretch(1)

    def _show_log(self, shown: bool) -> None:
        self.log_toggle.setText("Hide the log" if shown else "Show the log")
        self.log_view.setVisible(shown)
        if shown and self.run is not None:
            self.log_view.setPlainText("\n".join(self.run.log))

    # --- the plan --------------------------------------------------------------------------------------

    def refresh_plan(self) -> None:
        """Ask the installer what it sees (a short child process)."""
        if self.plan_run is not None and self.plan_run.running:
            return
        run = SetupRun(self)
        run.finished.connect(lambda _code: self._show_plan(run))
        self.plan_run = run
        try:
            wheels = self.wheel_folder()
            run.start(["--plan", "--venv", str(self.venv), *(["--wheels", str(wheels)] if wheels else []),
                       "--models", *self.models], python=self._python, env=self._env)
        except SetupUnavailable as e:
            self._show_error([(str(e), "")])

    def _show_plan(self, run: SetupRun) -> None:
        p = run.plan
        if p is None:
            self._show_error(run.errors or [("the installer gave no answer", "see the log")])
            self.log_view.setPlainText("\n".join(run.log))
            return
        self.error.hide()                       # a new plan: the problems shown are its own
        self.hardware.setText(f"{p['hardware']} ({p['system']})")
        self.torch.setText(p["torch"] or p["problem"])
        if p["torch"] and p["problem"]:         # the torch build is known; something else is wrong (the wheel folder)
            self._show_error([(p["problem"], "choose the folder holding the .whl files, or leave Wheel folder empty")])
        have = " (an environment is already there: only what is missing is installed)" if p["installed"] else ""
        self.disk.setText(f"needs about {_gb(p['needed'])}, {_gb(p['free'])} free{have}")
        if p["free"] and p["needed"] > p["free"]:
            self._show_error([(f"not enough disk space at {p['venv']}", "choose another location")])

    def _choose_location(self) -> None:
        chosen = QtWidgets.QFileDialog.getExistingDirectory(self, "Where the engine goes", str(self.venv.parent))
        if chosen:
            self.set_location(Path(chosen) / "engine")

    def wheel_folder(self) -> Path | None:
        """The optional folder of wheel files (None: pip's package index)."""
        text = self.wheels.text().strip()
        return Path(text).expanduser() if text else None

    def _choose_wheels(self) -> None:
        chosen = QtWidgets.QFileDialog.getExistingDirectory(self, "The folder of wheel files", self.wheels.text())
        if chosen:
            self.set_wheels(Path(chosen))

    def set_wheels(self, folder: Path | None) -> None:
        self.wheels.setText(str(folder) if folder else "")
        self.refresh_plan()

    def set_location(self, venv: Path) -> None:
        self.venv = Path(venv)
        self.location.setText(str(self.venv))
        self.refresh_plan()

    # --- the install -----------------------------------------------------------------------------------

    def install(self) -> None:
        if self.run is not None and self.run.running:
            return
        self.venv = Path(self.location.text().strip() or self.venv).expanduser()
        self.error.hide()
        for bar in self.step_bars.values():
            bar.setRange(0, 1)
            bar.setValue(0)
            bar.setFormat("waiting")
        run = SetupRun(self)
        run.changed.connect(self._schedule_update)
        run.finished.connect(self._done)
        self.run = run
        try:
            run.start(R.install_args(self.venv, self.models, self._plugin_dir, self.wheel_folder()),
                      python=self._python, env=self._env)
        except SetupUnavailable as e:
            self._show_error([(str(e), "")])
            return
        self.install_button.setEnabled(False)
        self.cancel_button.setEnabled(True)

    def _schedule_update(self) -> None:
        """The bars follow the child at most 5 times a second (a download reports more often)."""
        if not self._update_timer.isActive():
            self._update_timer.start()

    def cancel(self) -> None:
        if self.run is not None:
            self.run.cancel()

    def _update(self) -> None:
        run = self.run
        if run is None:
            return
        for s, state in run.steps.items():
            bar = self.step_bars[s]
            if state == "running":
                bar.setRange(0, 0)      # busy
            else:
                bar.setRange(0, 1)
                bar.setValue(1 if state in ("done", "skip") else 0)
            bar.setFormat({"skip": "already done", "fail": "failed"}.get(state, state))
        for name, f in run.files.items():
            bar = self._file_bars.get(name)
            if bar is None:
                bar = self._file_bars[name] = QtWidgets.QProgressBar()
                bar.setObjectName("file_bar")
                self.files_box.addRow(name, bar)
            bar.setRange(0, 1000)
            bar.setValue(int(1000 * f.done / f.total) if f.total else 0)
            bar.setFormat(f.text())
        if self.log_view.isVisible():
            self.log_view.setPlainText("\n".join(run.log))
            self.log_view.verticalScrollBar().setValue(self.log_view.verticalScrollBar().maximum())

    def _done(self, code: int) -> None:
        run = self.run
        self._update_timer.stop()
        self._update()
        self.install_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.log_view.setPlainText("\n".join(run.log if run else []))
        if code == 0 and run is not None:
            self.install_button.setText("Install again (repair)")
            self.installed.emit(run.python)
        elif code == 130:
            self._show_error([("Cancelled.", "Install continues where it stopped; nothing is downloaded twice.")])
        else:
            self._show_error((run.errors if run else []) or [(f"the setup stopped (exit {code})", "see the log")])

    def _show_error(self, errors: list[tuple[str, str]]) -> None:
        self.error.setText("\n".join(f"{text}" + (f"\nFix: {fix}" if fix else "") for text, fix in errors))
        self.error.show()


__all__ = ["SetupPage"]
