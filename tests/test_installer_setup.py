"""``python -m installer setup``: the dock's first run as JSON events, in a real child process, against the
fake hub.  The engine environment is a venv folder whose Python is this test environment's (torch already
matching, the requirements stamp in place), so the environment, torch and packages steps report ``skip``
and the models, plugin and check steps run for real.  A second run downloads nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.contract.catalog import CATALOG
from installer import engine_venv
from installer.torch_choice import choose_torch, probe_host

from .conftest import ROOT
from .fake_hub import FakeHub


def events(out: str) -> list[dict]:
    lines = [line for line in out.splitlines() if line.strip()]
    evs = [json.loads(line) for line in lines]      # stdout holds JSON lines only
    assert all("ev" in e for e in evs)
    return evs


@pytest.fixture
def ready_venv(tmp_path):
    return make_ready_venv(tmp_path)


def make_ready_venv(tmp_path: Path) -> Path:
    """A venv folder the plan finds complete: its python runs this one, the stamp is written (POSIX)."""
    if os.name == "nt":
        pytest.skip("the stand-in venv Python is a shell script")
    venv = tmp_path / "engine-venv"
    py = engine_venv.venv_python(venv)
    py.parent.mkdir(parents=True)
    py.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')    # this environment, under the venv's name
    py.chmod(0o755)
    choice = choose_torch(probe_host())
    found = engine_venv.installed_torch(py)
    if not engine_venv.torch_matches(found, choice):
        pytest.skip(f"this environment's torch {found} is not the build the setup would choose here")
    p = engine_venv.plan(choice, venv, found_torch=found)
    assert p.stamp is not None
    p.stamp.write_text("ok\n")
    return venv


def test_plan_says_what_it_found_and_what_it_needs(tmp_path):
    r = subprocess.run([sys.executable, "-m", "installer", "setup", "--plan", "--venv", str(tmp_path / "v")],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    plan = json.loads(r.stdout)
    assert r.returncode == 0 and plan["venv"] == str(tmp_path / "v") and not plan["installed"]
    assert plan["torch"].startswith("torch==") and plan["hardware"] and plan["models"] == ["sd2-inpainting"]
    assert plan["needed"] > 5e9 and plan["free"] > 0


def hub_env(tmp_path: Path, url: str) -> dict:
    """The installer's environment: the fake hub at ``url``, caches and models under ``tmp_path``."""
    env = {k: v for k, v in os.environ.items() if "PROXY" not in k.upper()}
    env.update(HF_ENDPOINT=url, HF_HUB_OFFLINE="0", NO_PROXY="127.0.0.1", HF_HUB_CACHE=str(tmp_path / "hf"),
               DD_MODELS_DIR=str(tmp_path / "models"), HOME=str(tmp_path / "home"))
    return env


def tiny_hub(tiny_root: Path) -> tuple[FakeHub, object]:
    hub = FakeHub()
    hub.add_folder(CATALOG["sd2-inpainting"].repo_id, tiny_root / "sd2-inpainting")
    return hub, hub.start()


def test_setup_runs_its_steps_as_events_and_resumes_without_downloading_twice(ready_venv, tiny_root, tmp_path):
    hub, handle = tiny_hub(tiny_root)
    plugin_dir = tmp_path / "pykrita" / "diffusion_dock"
    plugin_dir.mkdir(parents=True)
    env = hub_env(tmp_path, handle.url)
    cmd = [sys.executable, "-m", "installer", "setup", "--venv", str(ready_venv), "--plugin-dir", str(plugin_dir)]
    try:
        first = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
        evs = events(first.stdout)
        assert first.returncode == 0, (first.stderr, evs[-5:])
        steps = [(e["step"], e["state"]) for e in evs if e["ev"] == "step"]
        assert steps[:3] == [("environment", "skip"), ("torch", "skip"), ("packages", "skip")]
        assert [s for s in steps[3:] if s[1] == "done"] == [("models", "done"), ("plugin", "done"), ("check", "done")]
        files = [e for e in evs if e["ev"] == "file"]
        assert files and all(e["total"] > 0 for e in files)
        finals = {e["name"]: e for e in files}
        assert all(e["done"] == e["total"] for e in finals.values())
        assert evs[-1] == {"ev": "done", "python": str(engine_venv.venv_python(ready_venv))}
        record = json.loads((plugin_dir / "engine.json").read_text())
        assert record["python"] == str(engine_venv.venv_python(ready_venv).absolute())
        assert record["venv"] == str(ready_venv.absolute()) and "wheels" not in record   # for Repair in the dock
        gets = len(hub.requests_for("/cdn/"))
        assert gets > 0
        again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
        assert again.returncode == 0 and not [e for e in events(again.stdout) if e["ev"] == "file"]
        assert len(hub.requests_for("/cdn/")) == gets          # nothing downloaded twice
    finally:
        handle.stop()


def test_a_failing_step_says_the_fix(ready_venv, tmp_path):
    """No hub: the models step fails with a fix line, in events, exit 1, and no traceback anywhere."""
    env = dict(os.environ, HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_OFFLINE="0", HF_HUB_CACHE=str(tmp_path / "hf"),
               DD_MODELS_DIR=str(tmp_path / "models"))
    r = subprocess.run([sys.executable, "-m", "installer", "setup", "--venv", str(ready_venv)], capture_output=True,
                       text=True, cwd=ROOT, env=env, timeout=300)
    evs = events(r.stdout)
    [err] = [e for e in evs if e["ev"] == "error"]
    assert r.returncode == 1 and err["text"].startswith("models:") and "Install again" in err["fix"]
    assert ("models", "fail") in [(e["step"], e["state"]) for e in evs if e["ev"] == "step"]
    assert "Traceback" not in r.stdout + r.stderr


def test_file_events_are_throttled(monkeypatch, capsys):
    from installer import setup_run

    assert setup_run.file_reporter("unet", 10) is None
    monkeypatch.setenv(setup_run.EVENTS_ENV, "1")
    report = setup_run.file_reporter("unet [1/3]", 100)
    for i in range(1000):
        report(i)
    report(100, True)
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert 2 <= len(lines) <= 10 and lines[-1] == {"ev": "file", "name": "unet [1/3]", "done": 100, "total": 100}


def test_the_check_step_reports_doctors_fix(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'problem: torch is not installed in this Python'\n"
                    "echo '    fix: python3 -m installer engine'\nexit 3\n")
    fake.chmod(0o755)
    from installer.setup_run import _doctor_fix

    assert _doctor_fix(Path(fake), dict(os.environ)) == ([("torch is not installed in this Python",
                                                          "python3 -m installer engine")], False)
