"""The dock's settings: which engine to use (local or remote) and the form's last values per mode.
A JSON file in the config folder (``paths.config_dir()/dock.json``).  Standard library only.

Engine choice, in order:
1. remote, when ``engine`` is ``"remote"``: ``url`` (tcp://host:port or tls://host:port), ``token``,
   optional ``cafile`` (a self-signed server certificate);
2. local: ``python`` when set, else ``DD_ENGINE_PYTHON``, else the engine the installer recorded in
   ``engine.json`` beside the installed plugin, else (a source checkout) the repository's ``.venv``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..runtime.coreapi import atomic, paths

log = logging.getLogger(__name__)

FILE_NAME = "dock.json"
ENGINE_JSON = "engine.json"
PACKAGE_DIR = Path(__file__).resolve().parents[1]   # diffusion_dock/, where the installer writes engine.json


@dataclass
class Settings:
    engine: str = "local"          # local | remote
    python: str = ""               # local engine's Python ("" = found automatically)
    url: str = ""
    token: str = ""
    cafile: str = ""
    device: str = ""               # "" = the engine decides; cpu | cuda | mps
    # The local engine compiles its UNets while idle unless this is off (``--no-compile``).  Named anew
    # when the default became on: files saved before hold ``"compile": false``, the old default, which
    # must not keep it off.
    compile_unet: bool = True
    form: dict = field(default_factory=dict)   # mode → the form's last values
    models: dict = field(default_factory=dict)  # mode → the model chosen for it ("" or absent: the default)

    @classmethod
    def path(cls) -> Path:
        return paths.config_dir() / FILE_NAME

    @classmethod
    def load(cls, path: Path | None = None) -> Settings:
        path = path or cls.path()
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as e:
            log.warning("ignoring unreadable settings %s: %s", path, e)
            return cls()
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in raw.items() if k in known} if isinstance(raw, dict) else {}
        s = cls(**kw)
        if s.engine not in ("local", "remote"):
            s.engine = "local"
        if not isinstance(s.form, dict):
            s.form = {}
        if not isinstance(s.models, dict):
            s.models = {}
        return s

    def save(self, path: Path | None = None) -> None:
        path = path or self.path()
        data = json.dumps(asdict(self), indent=1, ensure_ascii=False)
        atomic.write_text(path, data, permissions=0o600, parents=True)    # it may hold a token


class EngineNotFound(Exception):
    """No engine environment was found; the message says how to make one."""


@dataclass(frozen=True)
class LocalEngine:
    python: str
    root: str          # the folder from which ``python -m core.engine`` runs
    source: str        # "settings", "environment", "engine.json" or "checkout"


def _venv_python(root: Path) -> Path:
    return root / ".venv" / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def find_local_engine(settings: Settings | None = None, package_dir: Path = PACKAGE_DIR) -> LocalEngine:
    """The local engine's Python and root folder; raises EngineNotFound with the fix."""
    record_path = package_dir / ENGINE_JSON
    record = {}
    if record_path.is_file():
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise EngineNotFound(f"{record_path} is unreadable ({e}): run `python3 -m installer plugin` again") \
                from None
    checkout = package_dir.parent.parent
    root = Path(record.get("engine_root") or checkout)
    explicit = (settings.python if settings else "") or os.environ.get("DD_ENGINE_PYTHON", "")
    if explicit:
        source = "settings" if settings and settings.python else "environment"
        python = Path(explicit)
    elif record.get("python"):
        source, python = "engine.json", Path(record["python"])
    else:
        source, python = "checkout", _venv_python(checkout)
        root = checkout
    if not (root / "core" / "engine" / "__main__.py").is_file():
        raise EngineNotFound(f"the engine's code was not found in {root}: run `python3 -m installer plugin` from "
                             f"the Diffusion Dock folder")
    if not python.exists():
        raise EngineNotFound(f"the engine's Python {python} does not exist: run `python3 -m installer engine` "
                             f"in {root}")
    return LocalEngine(str(python), str(root), source)
