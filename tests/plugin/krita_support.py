"""Installing the plugin the way the installer does, and running real Krita (kritarunner, or the
full editor under Xvfb)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

from core import PURE_MODULES

from ..conftest import ROOT

PLUGIN_SRC = ROOT / "plugin"
PACKAGE = "diffusion_dock"
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")
EDITOR_ONLY = ("editor",)          # the standalone editor is not installed into Krita (as the installer does)


def _ignore_package(directory, names):
    ignored = set(_IGNORE(directory, names))
    if Path(directory) == PLUGIN_SRC / PACKAGE:
        ignored.update(n for n in names if n in EDITOR_ONLY)
    return ignored


def install_plugin(resource_dir: Path) -> Path:
    """Install into a Krita resource folder (``~/.local/share/krita``); returns its pykrita folder.

    pykrita/diffusion_dock.desktop, pykrita/diffusion_dock/ (without the standalone editor, with
    vendor/qasync and _core/ = the engine's pure modules, plus protocol/client when they exist),
    actions/diffusion_dock.action.  The same layout as ``python -m installer``'s plugin install.
    """
    pykrita = resource_dir / "pykrita"
    target = pykrita / PACKAGE
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(PLUGIN_SRC / PACKAGE, target, ignore=_ignore_package)
    shutil.copy2(PLUGIN_SRC / f"{PACKAGE}.desktop", pykrita / f"{PACKAGE}.desktop")
    (resource_dir / "actions").mkdir(parents=True, exist_ok=True)
    shutil.copy2(PLUGIN_SRC / f"{PACKAGE}.action", resource_dir / "actions" / f"{PACKAGE}.action")
    core_dir = target / "_core"
    core_dir.mkdir()
    for name in ("__init__", *PURE_MODULES, "protocol", "client"):
        src = ROOT / "core" / f"{name}.py"
        if src.exists():
            shutil.copy2(src, core_dir / src.name)
    qasync_dir = Path(importlib.util.find_spec("qasync").submodule_search_locations[0])
    shutil.copytree(qasync_dir, target / "vendor" / "qasync", ignore=_IGNORE)
    return pykrita


def enable_plugin(home: Path) -> None:
    config = home / ".config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "kritarc").write_text(f"[python]\nenable_{PACKAGE}=true\nenable_dd_test_driver=true\n")


def clean_env(home: Path, **extra) -> dict:
    """The environment of a real Krita: Krita embeds the system Python, so no trace of our virtual
    environment may reach it (an activated venv's python3 first on PATH makes it lose PyQt5)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("QT_API", "DD_QT_API", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    venvs = {v for v in (os.environ.get("VIRTUAL_ENV"), sys.prefix if sys.prefix != sys.base_prefix else None) if v}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p and not any(p.startswith(v) for v in venvs))
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
               XDG_DATA_HOME=str(home / ".local" / "share"), XDG_CACHE_HOME=str(home / ".cache"))
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_kritarunner(home: Path, pythonpath: list[Path], module: str, args: list[str],
                    timeout: float = 240) -> subprocess.CompletedProcess:
    """``kritarunner -s module -f main args...`` headless; raises with Krita's output on failure."""
    env = clean_env(home, QT_QPA_PLATFORM="offscreen", PYTHONPATH=os.pathsep.join(map(str, pythonpath)))
    proc = subprocess.run(["kritarunner", "-s", module, "-f", "main", *args], env=env, capture_output=True,
                          text=True, errors="replace", timeout=timeout)
    return proc


def run_krita_gui(home: Path, out: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    """The full Krita under Xvfb with the plugins installed in ``home``; the driver plugin writes
    ``out`` and quits."""
    env = clean_env(home, QT_QPA_PLATFORM="xcb", DD_TEST_OUT=out)
    env.pop("PYTHONPATH", None)
    return subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", "krita", "--nosplash"],
                          env=env, capture_output=True, text=True, errors="replace", timeout=timeout)
