"""Installing the plugin with the real installer, and running real Krita (kritarunner, or the full
editor under Xvfb)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ..conftest import ROOT

PLUGIN_SRC = ROOT / "plugin"
PACKAGE = "diffusion_dock"


def install_plugin(resource_dir: Path, home: Path | None = None, engine_python: Path | None = None) -> Path:
    """Install the plugin into a Krita resource folder (``~/.local/share/krita``) with the real installer
    (``installer.plugin_install.install``: what ``python -m installer plugin`` does for users); returns
    its pykrita folder.  The kritarc it enables the plugin in is ``home/.config/kritarc`` (``home``
    defaults to the resource folder itself, a temporary folder in tests); engine.json names this Python
    and this checkout."""
    from installer import plugin_install

    resource_dir = Path(resource_dir)
    [result] = plugin_install.install(PLUGIN_SRC, [resource_dir], engine_python=engine_python or Path(sys.executable),
                                      engine_root=ROOT, system="Linux", home=home or resource_dir, env={},
                                      log=lambda m: None)
    assert result.resource_dir == resource_dir
    return result.target.pykrita


def install_plugin_cli(home: Path) -> Path:
    """``python -m installer plugin`` exactly as a user runs it, with ``HOME`` a fresh folder (no
    XDG variables, no Krita there yet: it installs into the native default); returns the pykrita
    folder it reports."""
    env = clean_env(home)
    for k in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "QT_QPA_PLATFORM"):
        env.pop(k, None)
    env["PATH"] = os.environ.get("PATH", "")
    proc = subprocess.run([sys.executable, "-m", "installer", "plugin"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [resource_dir] = proc.stdout.split()
    assert Path(resource_dir) == home / ".local" / "share" / "krita", proc.stdout
    return Path(resource_dir) / "pykrita"


def enable_plugin(home: Path, name: str) -> None:
    """Enable another plugin (the test driver) in ``home``'s kritarc, as the installer does for ours."""
    from installer import kritarc

    kritarc.write_key(home / ".config" / "kritarc", f"enable_{name}", "true")


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


def run_krita_gui(home: Path, out: Path, timeout: float = 240, screen: str = "1600x1000",
                  **extra) -> subprocess.CompletedProcess:
    """The full Krita under Xvfb with the plugins installed in ``home``; the driver plugin writes
    ``out`` and quits.  ``extra``: more environment variables (the driver's and the engine's)."""
    env = clean_env(home, QT_QPA_PLATFORM="xcb", DD_TEST_OUT=out, DD_SCREEN_SIZE=screen, **extra)
    env.pop("PYTHONPATH", None)
    for key in ("DD_CONFIG_DIR", "DD_RESULTS_DIR", "DD_CACHE_DIR"):     # the fresh HOME's own, not the test session's
        if key not in extra:
            env.pop(key, None)
    return subprocess.run(["xvfb-run", "-a", "-s", f"-screen 0 {screen}x24", "krita", "--nosplash"],
                          env=env, capture_output=True, text=True, errors="replace", timeout=timeout)
