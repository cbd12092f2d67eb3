"""The models page: the catalogue models (and the imported ones) with their size and whether they are
installed; Download (with a bar per file), Remove (saying the space freed) and Import a file (a
single-file SD2 ``.safetensors``: the installer places it by its tensors' shapes and asks, here in a
dialog, what the file cannot say).  Every action is ``python -m installer models …`` in the engine's
Python as a child process (``session.setup_runner.SetupRun``); nothing here waits on it.
"""

from __future__ import annotations

from pathlib import Path

from ..runtime.qt import QtWidgets, Signal
from ..session.setup_runner import SetupRun

EXIT_ASK = 4     # installer.importer.EXIT_ASK: the file needs an answer (--prediction)


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


class ModelsPage(QtWidgets.QWidget):
    changed = Signal()           # a model was added or removed: the engine should look again
    closed = Signal()

    def __init__(self, python: str, root: str, env: dict | None = None, parent=None):
        super().__init__(parent)
        self.setObjectName("models_page")
        self.python, self.root = python, Path(root)
        self.env = dict(env or {}, DD_INSTALLER_EVENTS="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
        self.rows: list[dict] = []
        self.run: SetupRun | None = None
        self.list_run: SetupRun | None = None
        self._widgets: list = []
        self._buttons: dict[str, QtWidgets.QPushButton] = {}
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(QtWidgets.QLabel("<b>Models</b>"))
        self.grid = QtWidgets.QGridLayout()
        lay.addLayout(self.grid)
        self.progress = QtWidgets.QProgressBar()
        self.progress.setObjectName("models_progress")
        self.progress.hide()
        lay.addWidget(self.progress)
        self.message = QtWidgets.QLabel()
        self.message.setObjectName("models_message")
        self.message.setWordWrap(True)
        lay.addWidget(self.message)
        buttons = QtWidgets.QHBoxLayout()
        self.import_button = QtWidgets.QPushButton("Import a file…")
        self.import_button.setObjectName("import_model")
        self.import_button.setToolTip("A single-file Stable Diffusion 2 checkpoint (.safetensors), e.g. a fine-tune")
        self.import_button.clicked.connect(self.import_file)
        back = QtWidgets.QPushButton("Back")
        back.clicked.connect(self.closed)
        buttons.addWidget(self.import_button, 2)
        buttons.addWidget(back, 1)
        lay.addLayout(buttons)
        lay.addStretch(1)

    # --- the list ----------------------------------------------------------------------------------------

    def refresh(self) -> None:
        run = SetupRun(self)
        run.finished.connect(lambda _c: self._show(run))
        self.list_run = run
        run.start(["--json"], python=self.python, root=self.root, env=self.env, command=("models", "list"))

    def _show(self, run: SetupRun) -> None:
        if not isinstance(run.result, list):
            self.say("The models could not be listed: " + (run.log[-1] if run.log else "no answer"), True)
            return
        self.rows = [r for r in run.result if isinstance(r, dict)]
        for w in self._widgets:
            w.deleteLater()
        self._widgets, self._buttons = [], {}
        for i, r in enumerate(self.rows):
            title = QtWidgets.QLabel(r["title"])
            title.setWordWrap(True)
            state = QtWidgets.QLabel(_gb(r["bytes"]) if r["installed"] else "not installed")
            state.setObjectName(f"state_{r['key']}")
            if r["installed"]:
                button = QtWidgets.QPushButton("Remove")
                button.clicked.connect(lambda _c=False, key=r["key"]: self.remove(key))
            else:
                button = QtWidgets.QPushButton("Download")
                button.clicked.connect(lambda _c=False, key=r["key"]: self.download(key))
                button.setEnabled(r["key"] != "big-lama")
            button.setObjectName(f"action_{r['key']}")
            self._buttons[r["key"]] = button
            for col, w in enumerate((title, state, button)):
                self.grid.addWidget(w, i, col)
                self._widgets.append(w)

    def button(self, key: str) -> QtWidgets.QPushButton | None:
        return self._buttons.get(key)

    def say(self, text: str, error: bool = False) -> None:
        self.message.setText(text)
        self.message.setStyleSheet("color: #d33;" if error else "")

    # --- actions -----------------------------------------------------------------------------------------

    def _start(self, command: tuple[str, ...], args: list[str], done) -> None:
        if self.run is not None and self.run.running:
            self.say("Another model action is running: wait for it.", True)
            return
        run = SetupRun(self)
        run.changed.connect(lambda: self._progress(run))
        run.finished.connect(lambda code: done(run, code))
        self.run = run
        run.start(args, python=self.python, root=self.root, env=self.env, command=command)

    def _progress(self, run: SetupRun) -> None:
        if not run.files:
            return
        name, f = list(run.files.items())[-1]
        self.progress.show()
        self.progress.setRange(0, 1000)
        self.progress.setValue(int(1000 * f.done / f.total) if f.total else 0)
        self.progress.setFormat(f"{name}: {f.text()}")

    def download(self, key: str) -> None:
        self.say(f"Downloading {key}…")
        self._start(("models", "download"), [key], lambda run, code: self._finished(run, code, f"{key} is installed."))

    def remove(self, key: str) -> None:
        def done(run, code):
            freed = run.result if isinstance(run.result, int) else 0
            self._finished(run, code, f"{key} removed: {_gb(freed)} freed.")

        self._start(("models", "remove"), [key], done)

    def import_file(self, path: str | None = None, name: str | None = None, prediction: str | None = None) -> None:
        path = path or self.ask_file()
        if not path:
            return
        name = name or self.ask_name(Path(path).stem)
        if not name:
            return
        args = [path, "--name", name, "--fetch-configs"] + (["--prediction", prediction] if prediction else [])

        def done(run, code):
            if code == EXIT_ASK:
                answer = self.ask_prediction(run.log[-1] if run.log else "")
                if answer:
                    self.import_file(path, name, answer)
                    return
            self._finished(run, code, f"{name} is imported: choose it in the form's Model box.")

        self.say(f"Importing {Path(path).name}…")
        self._start(("models", "import"), args, done)

    def _finished(self, run: SetupRun, code: int, ok_text: str) -> None:
        self.progress.hide()
        if code == 0:
            self.say(ok_text)
            self.changed.emit()
        else:
            lines = [line for line in run.log if line.startswith("error: ")]
            self.say((lines[-1][len("error: "):] if lines else f"The installer stopped (exit {code}).")[:400], True)
        self.refresh()

    # --- questions (dialogs; tests answer them) ------------------------------------------------------

    def ask_file(self) -> str:
        path, _f = QtWidgets.QFileDialog.getOpenFileName(self, "Import a model", "", "Safetensors (*.safetensors)")
        return path

    def ask_name(self, default: str) -> str:
        text, ok = QtWidgets.QInputDialog.getText(self, "Import a model", "Name in the models folder:", text=default)
        return text.strip() if ok else ""

    def ask_prediction(self, question: str) -> str:
        items = ["v (2-1, 768 px)", "epsilon (2-1-base, 512 px)"]
        item, ok = QtWidgets.QInputDialog.getItem(self, "Import a model", question[:300] + "\n\nThe model predicts:",
                                                  items, 0, False)
        return item.split()[0] if ok else ""


__all__ = ["ModelsPage"]
