"""Where the app keeps its files (platformdirs), each overridable by an environment variable."""

from __future__ import annotations

import os
from pathlib import Path

APP = "diffusion-dock"


def _dirs():
    import platformdirs

    return platformdirs.PlatformDirs(APP, appauthor=False)


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


def hf_hub_cache() -> Path:
    """The standard Hugging Face hub cache: HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return Path(home) / "hub"
