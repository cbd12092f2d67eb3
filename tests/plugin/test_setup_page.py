"""The dock's setup page: the installer as a child process (QProcess) against the fake hub, its events
as bars per step and per file, errors with the fix line, Cancel, and the dock opening the page by itself
when no engine environment exists."""

from __future__ import annotations

import sys

import pytest

from ..test_installer_setup import hub_env, make_ready_venv, tiny_hub
from .dock_util import ROOT, spin_until


@pytest.fixture
def page_kw(tmp_path, tiny_root):
    hub, handle = tiny_hub(tiny_root)
    plugin_dir = tmp_path / "plugin"
    plugin_dir.mkdir()
    yield dict(venv=make_ready_venv(tmp_path), python=sys.executable, env=hub_env(tmp_path, handle.url),
               plugin_dir=plugin_dir)
    handle.stop()


def test_plan_then_install_shows_each_step_and_file(qapp, page_kw):
    from plugin.diffusion_dock.panel.setup_page import SetupPage

    page = SetupPage(**page_kw)
    page.refresh_plan()
    spin_until(lambda: page.plan_run.exit_code is not None, 60, "the plan")
    assert page.hardware.text() != "looking…" and "GB free" in page.disk.text()
    assert "already there" in page.disk.text()      # the ready venv exists
    done: list[str] = []
    page.installed.connect(done.append)
    page.install_button.click()
    assert not page.install_button.isEnabled() and page.cancel_button.isEnabled()
    spin_until(lambda: page.run.exit_code is not None, 600, "the setup")
    assert page.run.exit_code == 0, page.run.errors
    assert done == [str(page_kw["venv"] / "bin" / "python")]
    assert [page.step_bars[s].format() for s in ("environment", "torch", "packages")] == ["already done"] * 3
    assert all(page.step_bars[s].format() == "done" for s in ("models", "plugin", "check"))
    assert page._file_bars and all(b.value() == 1000 for b in page._file_bars.values())
    assert all(" MB" in b.format() for b in page._file_bars.values())
    assert (page_kw["plugin_dir"] / "engine.json").is_file()
    assert not page.error.isVisible() and page.install_button.isEnabled()


def test_a_failed_download_shows_the_fix(qapp, page_kw):
    from plugin.diffusion_dock.panel.setup_page import SetupPage

    page_kw["env"]["HF_ENDPOINT"] = "http://127.0.0.1:9"
    page = SetupPage(**page_kw)
    page.install()
    spin_until(lambda: page.run.exit_code is not None, 300, "the setup")
    assert page.run.exit_code == 1 and page.step_bars["models"].format() == "failed"
    assert "Fix: press Install again" in page.error.text() and "Traceback" not in page.error.text()


def test_cancel_ends_the_installer_and_says_how_to_resume(qapp, tmp_path):
    """A stand-in installer that reports a step and then hangs: Cancel ends it through SIGTERM."""
    from plugin.diffusion_dock.session.setup_runner import SetupRun

    root = tmp_path / "root"
    (root / "installer").mkdir(parents=True)
    (root / "installer" / "__main__.py").write_text(
        "import json, time\nprint(json.dumps({'ev': 'step', 'step': 'torch', 'state': 'start'}), flush=True)\n"
        "print(json.dumps({'ev': 'file', 'name': 'unet [1/3]', 'done': 10, 'total': 100}), flush=True)\n"
        "time.sleep(120)\n")
    run = SetupRun()
    run.start([], python=sys.executable, root=root)
    spin_until(lambda: run.steps["torch"] == "running" and run.files, 60, "the first events")
    assert run.files["unet [1/3]"].text().startswith("0/0 MB")
    run.cancel()
    spin_until(lambda: run.exit_code is not None, 30, "the cancel")
    assert run.exit_code == 130 and run.proc.state() == run.proc.state().NotRunning


def test_file_state_rate_and_time_left():
    from plugin.diffusion_dock.session.setup_runner import FileState

    f = FileState("unet")
    f.update(0, 100_000_000, 10.0)
    f.update(20_000_000, 100_000_000, 11.0)
    assert f.rate == pytest.approx(20e6) and f.seconds_left == pytest.approx(4.0)
    assert f.text() == "20/100 MB · 20.0 MB/s · 4 s left"


def test_the_dock_opens_the_setup_page_without_an_engine(qapp, tmp_path, page_kw):
    from plugin.diffusion_dock.panel.dock import DockPanel
    from plugin.diffusion_dock.runtime import aio
    from plugin.diffusion_dock.session.dock_session import DockSession
    from plugin.diffusion_dock.session.results_store import ResultStore
    from plugin.diffusion_dock.session.settings import Settings

    aio.loop()
    session = DockSession(Settings(python=str(tmp_path / "no-python")), ResultStore(tmp_path / "results"))
    session.setup_options = page_kw
    panel = DockPanel(session=session)
    session.start_engine()
    assert session.status.code == "engine_not_found"
    assert panel.pages.currentIndex() == 1 and panel.pages.setup_page is not None
    panel.pages.setup_page.back_button.click()
    assert panel.pages.currentIndex() == 0
    labels = [a.text() for a in panel.engine_bar.menu.actions()]
    assert "Setup and repair…" in labels
    spin_until(lambda: panel.pages.setup_page.plan_run.exit_code is not None, 60, "the plan")
    aio.close()
    assert ROOT.is_dir()


def test_the_wheel_folder_field_reaches_the_installer(qapp, tmp_path):
    """A folder that does not exist: the plan says so, and Install stops before creating anything with the
    installer's fix line (the field's value went to ``--wheels``)."""
    from plugin.diffusion_dock.panel.setup_page import SetupPage
    from plugin.diffusion_dock.session.setup_runner import install_args

    assert install_args(tmp_path / "v", [], tmp_path, tmp_path / "w")[4:6] == ["--wheels", str(tmp_path / "w")]
    assert "--wheels" not in install_args(tmp_path / "v", [], tmp_path)
    page = SetupPage(venv=tmp_path / "engine", models=[], python=sys.executable, plugin_dir=tmp_path)
    page.set_wheels(tmp_path / "no-wheels")
    spin_until(lambda: page.plan_run.exit_code is not None, 60, "the plan")
    assert "does not exist" in page.torch.text() or "does not exist" in page.error.text()
    page.install()
    spin_until(lambda: page.run.exit_code is not None, 60, "the setup")
    assert page.run.exit_code == 1 and page.step_bars["environment"].format() == "failed"
    assert "Wheel folder" in page.error.text() and not (tmp_path / "engine").exists()


def test_repair_starts_from_the_last_setups_location_and_wheel_folder(qapp, tmp_path):
    """The page reached again from the dock menu offers what ``engine.json`` recorded (the setup writes the
    environment's folder and the wheel folder there), not the defaults; a wheel folder gone since is not
    offered, and a record that is not an object is ignored."""
    import json

    from plugin.diffusion_dock.panel.setup_page import SetupPage
    from plugin.diffusion_dock.session import setup_runner as R

    venv, wheels = tmp_path / "elsewhere" / "engine", tmp_path / "wheels"
    wheels.mkdir()
    record = tmp_path / "engine.json"
    record.write_text(json.dumps({"python": str(venv / "bin" / "python"), "venv": str(venv), "wheels": str(wheels)}))
    page = SetupPage(models=[], python=sys.executable, plugin_dir=tmp_path)
    assert page.venv == venv and page.location.text() == str(venv)
    assert page.wheel_folder() == wheels
    wheels.rmdir()
    assert R.recorded(tmp_path) == R.Recorded(venv, None)
    for text in ("[]", "null", "{", '{"venv": 3}'):
        record.write_text(text)
        assert R.recorded(tmp_path) == R.Recorded()
    assert SetupPage(models=[], python=sys.executable, plugin_dir=tmp_path).venv == R.default_venv()
