"""The first-run setup from the dock: ``python -m installer setup`` in a child process (``QProcess``: its
output arrives as Qt events, nothing waits), its JSON event lines turned into per-step and per-file state.

- ``where()``: the engine's sources the installer runs from (the release zip's ``_engine/`` inside the
  installed package, or the source checkout) and a Python 3.10+ to start it with.
- ``SetupRun``: one run (``--plan`` or the install).  ``steps`` maps each step to its state, ``files``
  each model file to bytes done, total, MB/s and seconds left; ``log`` keeps the last lines; ``errors``
  holds (what failed, the fix line).  ``cancel()`` sends SIGTERM: the installer ends its own child and
  exits; starting again resumes (the installer skips what is done, downloads continue).
Standard library and Qt only.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..runtime.coreapi import paths
from ..runtime.qt import QObject, QtCore, Signal
from .settings import ENGINE_JSON, PACKAGE_DIR

STEPS = ("environment", "torch", "packages", "models", "plugin", "check")
STEP_LABELS = {"environment": "Environment", "torch": "PyTorch", "packages": "Packages", "models": "Models",
               "plugin": "Link to the dock", "check": "Check"}
LOG_LINES = 400


class SetupUnavailable(Exception):
    """No installer sources or no Python to run them (the message says what to do)."""


def default_venv() -> Path:
    return paths.data_dir() / "engine"


@dataclass(frozen=True)
class Recorded:
    """What the last setup chose, from ``engine.json``: the environment's folder and the wheel folder."""

    venv: Path | None = None
    wheels: Path | None = None


def recorded(package_dir: Path = PACKAGE_DIR) -> Recorded:
    """The last setup's choices (empty when there was none, or the record is unreadable: the page then
    offers the defaults).  A wheel folder that no longer exists is not offered again."""
    try:
        rec = json.loads((package_dir / ENGINE_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return Recorded()
    if not isinstance(rec, dict):
        return Recorded()
    venv, wheels = (rec.get(k) if isinstance(rec.get(k), str) and rec.get(k) else None for k in ("venv", "wheels"))
    return Recorded(Path(venv) if venv else None, Path(wheels) if wheels and Path(wheels).is_dir() else None)


def engine_root(package_dir: Path = PACKAGE_DIR) -> Path:
    for root in (package_dir / "_engine", package_dir.parent.parent):
        if (root / "installer" / "__main__.py").is_file():
            return root
    raise SetupUnavailable(f"the installer was not found beside the dock ({package_dir / '_engine'}): install the "
                           f"plugin again from the release zip")


def base_python() -> str:
    """A Python 3.10+ to run the installer: ``DD_SETUP_PYTHON``, this one outside Krita, else python3 on PATH."""
    explicit = os.environ.get("DD_SETUP_PYTHON")
    if explicit:
        return explicit
    exe = Path(sys.executable or "")
    if exe.name.lower().startswith("python") and sys.version_info >= (3, 10):
        return str(exe)
    for name in ("python3", "python", "py"):
        found = shutil.which(name)
        if found:
            return found
    raise SetupUnavailable("no Python 3.10 or newer was found on this computer: install it from python.org, "
                           "then open the setup again")


@dataclass
class FileState:
    name: str
    done: int = 0
    total: int = 0
    rate: float = 0.0          # bytes per second, smoothed
    _t: float = field(default=0.0, repr=False)
    _b: int = field(default=0, repr=False)

    def update(self, done: int, total: int, now: float) -> None:
        if self._t and now > self._t and done >= self._b:
            inst = (done - self._b) / (now - self._t)
            self.rate = inst if not self.rate else 0.7 * self.rate + 0.3 * inst
        if not self._t or now - self._t >= 0.2:
            self._t, self._b = now, done
        self.done, self.total = done, total

    @property
    def seconds_left(self) -> float | None:
        if self.rate <= 0 or not self.total:
            return None
        return max(0.0, (self.total - self.done) / self.rate)

    def text(self) -> str:
        mb = self.done / 1e6
        parts = [f"{mb:.0f}/{self.total / 1e6:.0f} MB" if self.total else f"{mb:.0f} MB"]
        if self.rate > 0 and self.done < self.total:
            parts.append(f"{self.rate / 1e6:.1f} MB/s")
            left = self.seconds_left
            if left is not None:
                parts.append(f"{int(left // 60)} min {int(left % 60):02d} s left" if left >= 60
                             else f"{left:.0f} s left")
        return " · ".join(parts)


class SetupRun(QObject):
    """``changed`` after each event; ``finished(exit code)`` once."""

    changed = Signal()
    finished = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.steps: dict[str, str] = {s: "waiting" for s in STEPS}
        self.files: dict[str, FileState] = {}
        self.log: list[str] = []
        self.errors: list[tuple[str, str]] = []
        self.plan: dict | None = None
        self.result: object = None
        self.python = ""
        self.exit_code: int | None = None
        self.cancelled = False
        self._buffer = b""
        self.proc: QtCore.QProcess | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.exit_code is None

    def start(self, args: list[str], *, python: str | None = None, root: Path | None = None,
              env: dict | None = None, command: tuple[str, ...] = ("setup",)) -> None:
        """``python -m installer COMMAND ARGS`` (the setup, or the models page's ``models …``)."""
        root = root or engine_root()
        proc = QtCore.QProcess(self)
        proc.setProgram(python or base_python())
        proc.setArguments(["-m", "installer", *command, *args])
        proc.setWorkingDirectory(str(root))
        environment = QtCore.QProcessEnvironment.systemEnvironment()
        environment.insert("PYTHONPATH", str(root))
        environment.insert("PYTHONUNBUFFERED", "1")
        for k, v in (env or {}).items():
            environment.insert(k, v)
        proc.setProcessEnvironment(environment)
        proc.setProcessChannelMode(QtCore.QProcess.ProcessChannelMode.SeparateChannels)
        proc.readyReadStandardOutput.connect(self._read)
        proc.readyReadStandardError.connect(self._read_err)
        proc.finished.connect(self._finished)
        proc.errorOccurred.connect(self._error)
        self.proc = proc
        proc.start()

    def cancel(self) -> None:
        if self.running and self.proc is not None:
            self.cancelled = True
            self.proc.terminate()
            QtCore.QTimer.singleShot(15000, self._kill)

    def _kill(self) -> None:
        if self.running and self.proc is not None:
            self.proc.kill()

    def _read(self) -> None:
        assert self.proc is not None
        self._buffer += self.proc.readAllStandardOutput().data()
        *lines, self._buffer = self._buffer.split(b"\n")
        now = time.monotonic()
        for raw in lines:
            self.handle(raw.decode("utf-8", "replace"), now)
        if lines:
            self.changed.emit()

    def _read_err(self) -> None:
        assert self.proc is not None
        text = self.proc.readAllStandardError().data().decode("utf-8", "replace")
        for line in text.splitlines():
            if line.strip():
                self._log(line)
        self.changed.emit()

    def _log(self, line: str) -> None:
        self.log.append(line[-500:])
        del self.log[:-LOG_LINES]

    def handle(self, line: str, now: float) -> None:
        """One line of the installer's stdout."""
        try:
            ev = json.loads(line)
        except ValueError:
            if line.strip():
                self._log(line)
            return
        if not isinstance(ev, dict):
            self.result = ev          # a command's answer (models list: a list; models remove: bytes freed)
            return
        kind = ev.get("ev")
        if kind == "step" and ev.get("step") in self.steps:
            self.steps[ev["step"]] = {"start": "running"}.get(ev.get("state"), ev.get("state") or "")
            self._log(f"{STEP_LABELS[ev['step']]}: {ev.get('state')}" + (f" ({ev['text']})" if ev.get("text") else ""))
        elif kind == "file":
            name = str(ev.get("name") or "file")
            f = self.files.setdefault(name, FileState(name))
            f.update(int(ev.get("done") or 0), int(ev.get("total") or 0), now)
        elif kind == "log":
            self._log(str(ev.get("text", "")))
        elif kind == "error":
            self.errors.append((str(ev.get("text", "")), str(ev.get("fix", ""))))
        elif kind == "done":
            self.python = str(ev.get("python", ""))
        elif "hardware" in ev:
            self.plan = ev

    def _finished(self, code, _status=None) -> None:
        if self.exit_code is not None:
            return
        self._read()
        self.exit_code = 130 if self.cancelled else int(code)
        self.changed.emit()
        self.finished.emit(self.exit_code)

    def _error(self, err) -> None:
        if err == QtCore.QProcess.ProcessError.FailedToStart:
            self.errors.append(("the installer could not be started", "install Python 3.10 or newer from "
                                                                      "python.org and open the setup again"))
            self.exit_code = 1
            self.changed.emit()
            self.finished.emit(1)


def install_args(venv: Path, models: list[str], plugin_dir: Path = PACKAGE_DIR, wheels: Path | None = None) -> list[str]:
    """The setup's arguments; ``wheels``: a folder of .whl files pip installs from alone (offline)."""
    return (["--venv", str(venv), "--plugin-dir", str(plugin_dir)] + (["--wheels", str(wheels)] if wheels else [])
            + ["--models", *models])


__all__ = ["STEPS", "STEP_LABELS", "FileState", "SetupRun", "SetupUnavailable", "base_python", "default_venv",
           "engine_root", "install_args"]
