"""Where the dock keeps its files, with the standard library only (the engine uses platformdirs; these
functions give the same folders, and honour the same environment variables).

=============  ==========================================  ===================
folder         Linux                                       override
=============  ==========================================  ===================
data           ``$XDG_DATA_HOME/diffusion-dock``
results        ``<data>/results``                          ``DD_RESULTS_DIR``
config         ``$XDG_CONFIG_HOME/diffusion-dock``         ``DD_CONFIG_DIR``
=============  ==========================================  ===================

macOS puts data and config in ``~/Library/Application Support/diffusion-dock``, Windows in
``%LOCALAPPDATA%\\diffusion-dock``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP = "diffusion-dock"


def _home() -> Path:
    return Path(os.path.expanduser("~"))


def _platform_base(kind: str) -> Path:
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or _home() / "AppData" / "Local")
    if sys.platform == "darwin":
        return _home() / "Library" / "Application Support"
    if kind == "config":
        return Path(os.environ.get("XDG_CONFIG_HOME", "").strip() or _home() / ".config")
    return Path(os.environ.get("XDG_DATA_HOME", "").strip() or _home() / ".local" / "share")


def data_dir() -> Path:
    return _platform_base("data") / APP


def results_dir() -> Path:
    """Where finished results are kept (the engine's ``core.contract.paths.results_dir()``)."""
    env = os.environ.get("DD_RESULTS_DIR")
    return Path(env) if env else data_dir() / "results"


def config_dir() -> Path:
    env = os.environ.get("DD_CONFIG_DIR")
    return Path(env) if env else _platform_base("config") / APP
