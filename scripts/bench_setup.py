"""Benchmark of the setup page: how long the editor's event loop stalls while the first-run setup runs.

    .venv/bin/python scripts/bench_setup.py [--screenshot docs/screenshots/setup-page.png]

The dock's setup page (offscreen Qt) runs ``python -m installer setup`` as its child process against
the fake hub of the tests (``tests/fake_hub.py``) serving the tiny inpainting model, into a stand-in
engine environment whose Python is this one (so the environment, torch and packages steps are already
done and report so; the models, plugin and check steps run for real).  It runs three times: the plan,
the install, the install again (everything there: nothing is downloaded).  For each it prints the
time and the largest event-loop stall the dock's ``StallMeter`` saw (10 ms ticks).  The goal is under
50 ms.  A first row measures the same meter with nothing running for 5 s: on a busy machine (the child
processes share the cores with the editor) that is the noise floor the other rows stand on.  Prints a Markdown table; nothing here is a pass/fail test.  POSIX only (the stand-in Python is
a shell script).
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
    ap.add_argument("--screenshot", type=Path, help="save the setup page after the install as this PNG")
    args = ap.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    work = Path(tempfile.mkdtemp(prefix="dd-bench-setup-"))
    try:
        rows = run(work, args.screenshot)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("| setup run | time | largest event-loop stall | exit |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['seconds']:.1f} s | {r['stall_ms']:.1f} ms | {r['exit']} |")
    return 0


def run(work: Path, screenshot: Path | None) -> list[dict]:
    from core.devtools.tiny_models import build_all
    from plugin.diffusion_dock.panel.setup_page import SetupPage
    from plugin.diffusion_dock.runtime.qt import QtWidgets
    from plugin.diffusion_dock.runtime.stall import StallMeter
    from tests.plugin.dock_util import spin_until
    from tests.test_installer_setup import hub_env, make_ready_venv, tiny_hub

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["bench"])
    build_all(work / "tiny", kinds=("inpaint",))
    hub, handle = tiny_hub(work / "tiny")
    (work / "plugin").mkdir()
    page = SetupPage(venv=make_ready_venv(work), python=sys.executable, env=hub_env(work, handle.url),
                     plugin_dir=work / "plugin")
    page.resize(420, 720)
    page.show()
    meter = StallMeter()
    rows = []

    class Watch:
        max_stall_ms = 0.0

    try:
        w0 = Watch()
        meter.watch(w0)
        t0 = time.perf_counter()
        spin_until(lambda: time.perf_counter() - t0 > 5, 10, "the idle baseline")
        meter.unwatch(w0)
        rows.append({"run": "idle (baseline)", "seconds": 5.0, "stall_ms": w0.max_stall_ms, "exit": "-"})
        for name, start, done in (("plan", page.refresh_plan, lambda: page.plan_run.exit_code is not None),
                                  ("install (fresh)", page.install, lambda: page.run.exit_code is not None),
                                  ("install again (all there)", page.install,
                                   lambda: page.run.exit_code is not None)):
            w = Watch()
            meter.watch(w)
            t0 = time.perf_counter()
            start()
            spin_until(done, 600, name)
            seconds = time.perf_counter() - t0
            meter.unwatch(w)
            code = page.plan_run.exit_code if name == "plan" else page.run.exit_code
            rows.append({"run": name, "seconds": seconds, "stall_ms": w.max_stall_ms, "exit": code})
            if name == "install (fresh)" and screenshot is not None:
                page.log_toggle.setChecked(True)
                app.processEvents()
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.grab().save(str(screenshot))
                page.log_toggle.setChecked(False)
    finally:
        handle.stop()
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
