"""Where the app keeps its files (platformdirs), each overridable by an environment variable.

The engine and the editor plugin both read these functions, so they always agree on the folders.
platformdirs is imported when a folder is asked for: the engine has it installed; the installed Krita
plugin carries a copy (``diffusion_dock/vendor/platformdirs``).

=============  ==========================================  ===================
folder         Linux                                       override
=============  ==========================================  ===================
data           ``$XDG_DATA_HOME/diffusion-dock``
models         ``<data>/models``                           ``DD_MODELS_DIR``
results        ``<data>/results``                          ``DD_RESULTS_DIR``
config         ``$XDG_CONFIG_HOME/diffusion-dock``         ``DD_CONFIG_DIR``
cache          ``$XDG_CACHE_HOME/diffusion-dock``          ``DD_CACHE_DIR``
logs           ``<cache>/log``                             ``DD_LOG_DIR``
=============  ==========================================  ===================

macOS keeps them in ``~/Library/Application Support``, ``Caches`` and ``Logs``; Windows in
``%LOCALAPPDATA%\\diffusion-dock``.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

APP = "diffusion-dock"


def _platformdirs():
    names = ["platformdirs"]
    if "._core" in (__package__ or ""):   # inside the installed plugin: its own copy first
        names.insert(0, __package__.split("._core")[0] + ".vendor.platformdirs")
    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError("platformdirs is missing: reinstall the plugin (python -m installer plugin)")


def _dirs():
    return _platformdirs().PlatformDirs(APP, appauthor=False)


def data_dir() -> Path:
    return Path(_dirs().user_data_dir)


def config_dir() -> Path:
    """Settings (the dock's ``dock.json``); DD_CONFIG_DIR overrides."""
    env = os.environ.get("DD_CONFIG_DIR")
    return Path(env) if env else Path(_dirs().user_config_dir)


def models_dir() -> Path:
    """The app's models folder (DD_MODELS_DIR overrides)."""
    env = os.environ.get("DD_MODELS_DIR")
    return Path(env) if env else Path(_dirs().user_data_dir) / "models"


def log_dir() -> Path:
    env = os.environ.get("DD_LOG_DIR")
    return Path(env) if env else Path(_dirs().user_log_dir)


def cache_dir() -> Path:
    env = os.environ.get("DD_CACHE_DIR")
    return Path(env) if env else Path(_dirs().user_cache_dir)


def results_dir() -> Path:
    env = os.environ.get("DD_RESULTS_DIR")
    return Path(env) if env else Path(_dirs().user_data_dir) / "results"
