"""The full Krita under Xvfb with the plugin installed by ``python -m installer plugin`` into a fresh HOME and the
test driver plugin beside it (``krita_scripts/gui/dd_test_driver``); shared by the real-Krita test and
``scripts/screenshots.py``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .krita_support import ROOT, enable_plugin, install_plugin_cli, run_krita_gui

DRIVER = Path(__file__).parent / "krita_scripts" / "gui"


def run_gui_scenario(home: Path, models_dir: Path | None = None, screenshot: Path | None = None,
                     timeout: float = 300, install=install_plugin_cli, **env) -> tuple[dict, Path, object]:
    """Install (``install(home)`` returns the pykrita folder), run Krita, return (the driver's results,
    the folder of its raw dumps, the process).  ``env``: more variables for Krita and the driver."""
    home.mkdir(parents=True, exist_ok=True)
    pykrita = install(home)
    shutil.copytree(DRIVER / "dd_test_driver", pykrita / "dd_test_driver", dirs_exist_ok=True)
    shutil.copy2(DRIVER / "dd_test_driver.desktop", pykrita / "dd_test_driver.desktop")
    enable_plugin(home, "dd_test_driver")
    out_dir = home / "out"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / "results.json"
    extra = {"DD_LOG_DIR": home / "logs", **env}
    if models_dir is not None:
        extra["DD_MODELS_DIR"] = models_dir
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        extra.update(DD_SCREENSHOT=screenshot.resolve(), DD_SAMPLE=ROOT / "resources" / "sample.png",
                     DD_SAMPLE_MASK=ROOT / "resources" / "sample_mask.png")
    proc = run_krita_gui(home, out, timeout=timeout, screen="1600x1200" if screenshot else "1600x1000", **extra)
    if not out.exists():
        raise AssertionError(f"Krita wrote no results (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-4000:]}")
    return json.loads(out.read_text()), out_dir, proc
