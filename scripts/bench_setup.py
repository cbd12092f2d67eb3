"""Benchmark of the setup page: how long the editor's event loop stalls while the first-run setup runs.

    .venv/bin/python scripts/bench_setup.py [--screenshots docs/screenshots] [--wheels]

The dock's setup page (offscreen Qt) runs ``python -m installer setup`` as its child process against
the fake hub of the tests (``tests/fake_hub.py``) serving the tiny inpainting model, into a stand-in
engine environment whose Python is this one (so the environment, torch and packages steps are already
done and report so; the models, plugin and check steps run for real).  It runs three times: the plan,
the install, the install again (everything there: nothing is downloaded).  For each it prints the
time and the largest event-loop stall the dock's ``StallMeter`` saw (10 ms ticks).  The goal is under
50 ms.  "Longest dock handler" is the longest the dock's own code ran for one event of the child
(reading its output, updating the bars): what the dock adds to a stall.  A first row measures the same meter with nothing running for 5 s: on a busy machine (the child
processes share the cores with the editor) that is the noise floor the other rows stand on.  Prints a Markdown table; nothing here is a pass/fail test.  ``--screenshots DIR`` saves ``setup-page.png`` after the install and
``models-page.png`` (the models page on the same folders, one model installed).  POSIX only (the stand-in Python is
a shell script).  ``--wheels``: instead of the stand-in, the install creates the environment and pip
installs torch and the engine's requirements for real, offline, from a wheel folder built as the first-run
test builds it (``tests/wheel_folder.engine_wheel_folder``; about 2 minutes more): pip's output is what
the dock reads then.
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
    ap.add_argument("--screenshots", type=Path, help="save setup-page.png and models-page.png into this folder")
    ap.add_argument("--wheels", action="store_true", help="a real environment from a wheel folder (offline pip)")
    args = ap.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    work = Path(tempfile.mkdtemp(prefix="dd-bench-setup-"))
    try:
        rows = run(work, args.screenshots, args.wheels)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("| setup run | time | largest event-loop stall | longest dock handler | exit |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['seconds']:.1f} s | {r['stall_ms']:.1f} ms | {r['handler_ms']:.1f} ms | {r['exit']} |")
    return 0


def run(work: Path, shots: Path | None, wheels: bool = False) -> list[dict]:
    from core.devtools.tiny_models import build_all
    from plugin.diffusion_dock.panel.setup_page import SetupPage
    from plugin.diffusion_dock.runtime.qt import QtWidgets
    from plugin.diffusion_dock.runtime.stall import StallMeter
    from tests.plugin.dock_util import spin_until
    from tests.test_installer_setup import hub_env, make_ready_venv, tiny_hub

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["bench"])
    longest = timed_handlers()
    build_all(work / "tiny", kinds=("inpaint",))
    hub, handle = tiny_hub(work / "tiny")
    (work / "plugin").mkdir()
    env = hub_env(work, handle.url)
    if wheels:
        from tests.wheel_folder import engine_wheel_folder, layered_venv, offline_pip_env

        folder, links, _names = engine_wheel_folder(work)
        venv = work / "engine-venv"
        layered_venv(venv, links)
        env = offline_pip_env(env)
        for key in [k for k in os.environ if k.upper().startswith("PIP_")]:   # the child's base environment
            del os.environ[key]                                               # is this one's: no pip settings
    else:
        venv = make_ready_venv(work)
    page = SetupPage(venv=venv, python=sys.executable, env=env, plugin_dir=work / "plugin")
    if wheels:
        page.wheels.setText(str(folder))
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
        rows.append({"run": "idle (baseline)", "seconds": 5.0, "stall_ms": w0.max_stall_ms, "handler_ms": 0.0,
                     "exit": "-"})
        for name, start, done in (("plan", page.refresh_plan, lambda: page.plan_run.exit_code is not None),
                                  ("install (fresh)", page.install, lambda: page.run.exit_code is not None),
                                  ("install again (all there)", page.install,
                                   lambda: page.run.exit_code is not None)):
            w = Watch()
            longest[0] = 0.0
            meter.watch(w)
            t0 = time.perf_counter()
            start()
            spin_until(done, 600, name)
            seconds = time.perf_counter() - t0
            meter.unwatch(w)
            code = page.plan_run.exit_code if name == "plan" else page.run.exit_code
            rows.append({"run": name, "seconds": seconds, "stall_ms": w.max_stall_ms, "handler_ms": longest[0],
                         "exit": code})
            if name == "install (fresh)" and shots is not None:
                page.log_toggle.setChecked(True)
                app.processEvents()
                shots.mkdir(parents=True, exist_ok=True)
                page.grab().save(str(shots / "setup-page.png"))
                page.log_toggle.setChecked(False)
        if shots is not None:
            models_shot(shots / "models-page.png", hub_env(work, handle.url))
    finally:
        handle.stop()
    return rows


def timed_handlers() -> list[float]:
    """Time the dock's handlers of the child's events; returns a one-item list holding the longest (ms)."""
    import functools

    from plugin.diffusion_dock.panel.setup_page import SetupPage
    from plugin.diffusion_dock.session.setup_runner import SetupRun

    longest = [0.0]
    for cls, names in ((SetupRun, ("_read", "_read_err", "_finished", "start")),
                       (SetupPage, ("_update", "_done", "_show_plan"))):
        for n in names:
            f = getattr(cls, n)

            def timed(*a, _f=f, **k):
                t0 = time.perf_counter()
                try:
                    return _f(*a, **k)
                finally:
                    longest[0] = max(longest[0], (time.perf_counter() - t0) * 1000)

            setattr(cls, n, functools.wraps(f)(timed))
    return longest


def models_shot(out: Path, env: dict) -> None:
    from plugin.diffusion_dock.panel.models_page import ModelsPage
    from tests.plugin.dock_util import spin_until

    page = ModelsPage(sys.executable, str(ROOT), env=env)
    page.resize(420, 330)
    page.show()
    page.refresh()
    spin_until(lambda: page.list_run is not None and page.list_run.exit_code is not None, 120, "the list")
    page.say("sd2-inpainting is installed.")
    t0 = time.perf_counter()
    spin_until(lambda: time.perf_counter() - t0 > 0.3, 5, "the page's layout")
    page.grab().save(str(out))


if __name__ == "__main__":
    raise SystemExit(main())
