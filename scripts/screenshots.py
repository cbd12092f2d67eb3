"""Screenshots of the dock for the README, made from real runs:

- ``docs/screenshots/editor-dock.png``: the standalone editor (offscreen Qt) on the sample image after
  a real Fill of the red ball through the engine process, previewed on the canvas;
- ``docs/screenshots/editor-controls.png``: the same editor in Inpaint mode with a prompt and two
  control layers set up (a canny of the image and a reference image): the form as the artist fills it,
  no job run;
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


def sample_window(work: Path):
    """(the application, the standalone editor on the sample image with the ball selected, its session)."""
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
    return app, window, session


def editor_shot(out: Path, work: Path) -> Path:
    from plugin.diffusion_dock.runtime import aio
    from tests.plugin.dock_util import run_coro, spin_until, wait_job

    app, window, session = sample_window(work)
    doc = window.document
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


def controls_shot(out: Path, work: Path) -> Path:
    app, window, _ = sample_window(work)
    window.resize(1400, 980)
    form = window.panel.form
    window.panel.set_mode("inpaint")
    form.prompt.setPlainText("a wooden rowing boat on the grass, evening light")
    for kind, strength, start, end in (("canny", 0.8, 0.0, 0.6), ("reference", 0.5, 0.0, 1.0)):
        form.controls_box.add_button.click()
        row = form.controls_box.rows[-1]
        row.type.setCurrentIndex(row.type.findData(kind))
        row.strength.setValue(strength)
        row.start.setValue(start)
        row.end.setValue(end)
    window.canvas.fit()
    app.processEvents()
    out.parent.mkdir(parents=True, exist_ok=True)
    window.grab().save(str(out))
    print(f"controls: {out}")
    window.close()
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
    ap.add_argument("--only", choices=("editor", "controls", "krita"))
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="dd-shots-"))
    try:
        if args.only in (None, "editor"):
            editor_shot(args.out / "editor-dock.png", work)
        if args.only in (None, "controls"):
            controls_shot(args.out / "editor-controls.png", work)
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
