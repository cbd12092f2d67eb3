"""Screenshots of the dock for the README, made from real runs:

- ``docs/screenshots/editor-dock.png``: the standalone editor (offscreen Qt) on the sample image after
  a real Fill of the red ball through the engine process, previewed on the canvas;
- ``docs/screenshots/krita-dock.png``: the full Krita under Xvfb with the plugin installed by the real
  installer into a fresh HOME, after a Fill through the dock (made by the real-Krita test driver).

    .venv/bin/python scripts/screenshots.py [--only editor|krita] [--out docs/screenshots]

Fill needs no model weights (OpenCV), so the results are real images even on a machine without SD2.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SAMPLE = ROOT / "resources" / "sample.png"
SAMPLE_MASK = ROOT / "resources" / "sample_mask.png"


def editor_shot(out: Path, work: Path) -> Path:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    for key, sub in (("DD_RESULTS_DIR", "results"), ("DD_CONFIG_DIR", "config"), ("DD_LOG_DIR", "logs")):
        os.environ[key] = str(work / sub)
    os.environ.setdefault("DD_MODELS_DIR", str(work / "models"))
    from plugin.diffusion_dock.editor import pixels
    from plugin.diffusion_dock.editor.window import EditorWindow
    from plugin.diffusion_dock.runtime import aio
    from plugin.diffusion_dock.runtime.qt import QtGui, QtWidgets
    from plugin.diffusion_dock.session.dock_session import DockSession
    from plugin.diffusion_dock.session.settings import Settings
    from tests.plugin.dock_util import run_coro, spin_until, wait_job

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["screenshots"])
    aio.loop()
    session = DockSession(Settings(python=sys.executable))
    window = EditorWindow(session=session)
    window.confirm_close = False
    if not window.open_path(SAMPLE):
        raise SystemExit(f"cannot open {SAMPLE}")
    window.show()
    mask_img = QtGui.QImage(str(SAMPLE_MASK)).convertToFormat(QtGui.QImage.Format.Format_Grayscale8)
    doc = window.document
    mask = pixels.new_mask(doc.width, doc.height)
    rect = pixels.Rect(0, 0, mask_img.width(), mask_img.height())
    pixels.write_rect(mask, 0, 0, rect.w, rect.h, pixels.read_rect(mask_img, rect))
    doc.set_selection(mask)
    session.start_engine()
    spin_until(lambda: session.capabilities is not None, 120, "the engine")
    window.panel.set_mode("fill")
    item = wait_job(window.panel.generate())
    if item.state != "done":
        raise SystemExit(f"the fill failed: {item.message}")
    spin_until(lambda: doc.preview is not None, 10, "the preview")
    doc.deselect()          # the selection's tint would hide the result on the canvas
    window.canvas.fit()
    app.processEvents()
    out.parent.mkdir(parents=True, exist_ok=True)
    window.grab().save(str(out))
    print(f"editor: {out} (fill of the red ball, max event-loop stall {item.max_stall_ms:.1f} ms)")
    run_coro(session.stop(), 30)
    aio.close()
    return out


def krita_shot(out: Path, work: Path) -> Path:
    """The real-Krita test scenario (tests/plugin/krita_gui.py: the plugin installed by the installer,
    a tiny-model inpaint through the dock), then a Fill of the sample image, grabbed."""
    from core.devtools.tiny_models import build_all
    from tests.plugin.krita_gui import run_gui_scenario

    models = work / "tiny-models"
    build_all(models, kinds=("inpaint",))
    results, _, proc = run_gui_scenario(work / "krita-home", models_dir=models, screenshot=out)
    if "crash" in results or not out.exists():
        raise SystemExit(f"Krita wrote no screenshot: {results.get('crash') or results}\n{proc.stderr[-2000:]}")
    shot = results.get("screenshot", {})
    print(f"krita: {out} (fill {shot.get('state')}; layers {shot.get('layers')})")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=("editor", "krita"))
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="dd-shots-"))
    try:
        if args.only in (None, "editor"):
            editor_shot(args.out / "editor-dock.png", work)
        if args.only in (None, "krita"):
            if not shutil.which("krita") or not shutil.which("xvfb-run"):
                print("krita: skipped (krita or xvfb-run is not installed)", file=sys.stderr)
            else:
                krita_shot(args.out / "krita-dock.png", work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
