"""Benchmark of the dock's responsiveness: how long the editor's event loop stalls while jobs run.

    .venv/bin/python scripts/bench_dock.py [--models DIR] [--sizes 512,2048] [--steps 4]

The standalone editor (offscreen Qt) runs real jobs through the dock and the engine process, as an
artist would: select, press the button, wait, Apply.  For each job it prints the time to result,
the time spent reading the layer before submitting (``read``: in the UI thread), the largest
event-loop stall while the job ran (the dock's own ``StallMeter``, 10 ms ticks) and the time Apply
took (``apply``: in the UI thread).  Without ``--models`` it builds the tiny test models in a
temporary folder, so the figures measure the machinery, not diffusion.  Prints a Markdown table;
nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=Path, help="a models folder (default: tiny models, built now)")
    ap.add_argument("--sizes", default="512,2048", help="document sizes (square), comma-separated")
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="dd-bench-dock-"))
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    for key, sub in (("DD_RESULTS_DIR", "results"), ("DD_CONFIG_DIR", "config"), ("DD_LOG_DIR", "logs")):
        os.environ[key] = str(work / sub)
    try:
        models = args.models
        if models is None:
            from core.devtools.tiny_models import build_all

            models = work / "tiny-models"
            build_all(models, kinds=("inpaint", "x4"))
        rows = run(models, [int(s) for s in args.sizes.split(",")], args.steps)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("| job | document | result in | read (UI thread) | largest stall while running | apply (UI thread) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['job']} | {r['size']} | {r['seconds']:.2f} s | {r['read_ms']:.1f} ms | "
              f"{r['stall_ms']:.1f} ms | {r['apply_ms']:.1f} ms |")
    return 0


def run(models: Path, sizes: list[int], steps: int) -> list[dict]:
    import numpy as np

    from plugin.diffusion_dock.editor import pixels
    from plugin.diffusion_dock.editor.document import EditorDocument
    from plugin.diffusion_dock.editor.window import EditorWindow
    from plugin.diffusion_dock.runtime.qt import QtWidgets
    from tests.plugin.dock_util import close_session, make_session, spin_until, wait_job

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["bench"])
    session = make_session(models, Path(os.environ["DD_RESULTS_DIR"]))
    rows = []
    try:
        for size in sizes:
            doc = EditorDocument.new(size, size, f"bench{size}")
            rng = np.random.default_rng(size)
            src = rng.integers(0, 256, (size, size, 4), dtype=np.uint8)
            src[..., 3] = 255
            pixels.write_rect(doc.layers[0].image, 0, 0, size, size, src.tobytes())
            window = EditorWindow(doc, session=session)
            window.confirm_close = False
            window.show()
            panel = window.panel
            session.start_engine()
            spin_until(lambda: session.capabilities is not None, 120, "the engine")
            s = size // 4
            mask = pixels.new_mask(size, size)
            pixels.write_rect(mask, s, s, 2 * s, s, bytes([255]) * (2 * s * s))
            doc.set_selection(mask)
            jobs = [("fill (OpenCV)", "fill", {}), (f"inpaint, {steps} steps", "inpaint", {"steps": steps})]
            if size <= 512:
                jobs.append((f"upscale x4, {steps} steps", "upscale", {"steps": steps}))
            for label, mode, form in jobs:
                panel.set_mode(mode)
                panel.form.prompt.setPlainText("a red ball")
                panel.form.seed.setText("1")
                if "steps" in form:
                    panel.form.steps.setValue(form["steps"])
                if mode == "upscale":
                    doc.deselect()
                    panel.form.tile.setValue(128)
                item = wait_job(panel.generate(), 600)
                if item.state != "done":
                    raise SystemExit(f"{label} on {size}: {item.state} {item.message}")
                app.processEvents()
                t0 = time.perf_counter()
                panel.apply_results(item.results[:1])
                apply_ms = (time.perf_counter() - t0) * 1000
                rows.append({"job": label, "size": f"{size}×{size}", "seconds": item.finished - item.submitted,
                             "read_ms": item.prepare_ms, "stall_ms": item.max_stall_ms, "apply_ms": apply_ms})
                print(f"{label} {size}: {rows[-1]}", file=sys.stderr)
            for w in list(EditorWindow.windows):
                w.confirm_close = False
                w.close()
    finally:
        close_session(session)
    return rows


if __name__ == "__main__":
    sys.exit(main())
