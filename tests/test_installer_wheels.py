"""``--wheels DIR``: the installer's pip steps take torch and the engine's requirements from a folder of
wheel files alone (``--no-index --find-links DIR``), offline.  The commands are checked as a plan; then a
real venv is built from a folder of tiny wheels (a stand-in ``torch`` 2.13.0 and a small engine project)
with pip's configuration switched off and every network access refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from installer import engine_venv
from installer.torch_choice import PYTORCH_INDEX, TorchChoice

from .conftest import ROOT
from .wheel_folder import offline_pip_env, repack, tiny_wheel

CUDA = TorchChoice("cuda", "torch==2.13.0", f"{PYTORCH_INDEX}/cu128", "test", build="cu128")
CPU_FROM_INDEX = TorchChoice("cpu", "torch==2.13.0", f"{PYTORCH_INDEX}/cpu", "test")


def test_the_plan_installs_both_steps_from_the_folder_and_never_from_an_index(tmp_path):
    wheels = tmp_path / "wheels"
    p = engine_venv.plan(CUDA, tmp_path / "venv", base_python="/usr/bin/python3", root=ROOT, venv_exists=False,
                         wheels=wheels)
    py = str(tmp_path / "venv" / "bin" / "python")
    source = ["--no-index", "--find-links", str(wheels)]
    assert p.commands[1] == [py, "-m", "pip", "install", "--disable-pip-version-check", "torch==2.13.0", *source]
    assert p.commands[2][-5:] == [*source, "-e", str(ROOT)]
    assert not any("--index-url" in c for c in p.commands)
    assert "from the wheel folder" in engine_venv.describe(CUDA, wheels)
    without = engine_venv.plan(CUDA, tmp_path / "venv", root=ROOT, venv_exists=False)
    assert without.commands[1][-2:] == ["--index-url", f"{PYTORCH_INDEX}/cu128"] and "--no-index" not in without.commands[2]


def test_a_missing_wheel_folder_is_refused_naming_the_option(tmp_path):
    out = subprocess.run([sys.executable, "-m", "installer", "engine", "--dry-run", "--venv", str(tmp_path / "v"),
                          "--wheels", str(tmp_path / "nowhere")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2 and "--wheels" in out.stderr and "not a folder" in out.stderr
    setup = subprocess.run([sys.executable, "-m", "installer", "setup", "--venv", str(tmp_path / "v"), "--models",
                            "--wheels", str(tmp_path / "nowhere")], capture_output=True, text=True, cwd=ROOT,
                           timeout=120)
    evs = [json.loads(line) for line in setup.stdout.splitlines()]
    assert setup.returncode == 1 and not (tmp_path / "v").exists()
    [err] = [e for e in evs if e["ev"] == "error"]
    assert "wheel folder" in err["text"] and "Wheel folder" in err["fix"]
    plan = subprocess.run([sys.executable, "-m", "installer", "setup", "--plan", "--venv", str(tmp_path / "v"),
                           "--wheels", str(tmp_path / "nowhere")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert "does not exist" in json.loads(plan.stdout)["problem"]


def tiny_engine(tmp_path):
    """A wheel folder (a stand-in torch, one requirement, setuptools for the build) and an engine project."""
    wheels = tmp_path / "wheels"
    tiny_wheel(wheels, "torch", "2.13.0", {"torch/__init__.py": textwrap.dedent("""\
        __version__ = "2.13.0"
        class version:
            cuda = None
            hip = None
        """)})
    tiny_wheel(wheels, "dd-tiny-dep", "1.2", {"dd_tiny_dep.py": "ANSWER = 42\n"})
    repack("setuptools", wheels)          # the project's build backend, in pip's isolated build environment
    root = tmp_path / "engine"
    (root / "tiny_engine").mkdir(parents=True)
    (root / "tiny_engine" / "__init__.py").write_text("import dd_tiny_dep\nimport torch\n")
    (root / "pyproject.toml").write_text(textwrap.dedent("""\
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "tiny-engine"
        version = "0.1"
        dependencies = ["torch>=2.4,<3", "dd-tiny-dep>=1"]
        [tool.setuptools.packages.find]
        include = ["tiny_engine*"]
        """))
    return wheels, root


@pytest.mark.slow
def test_a_venv_is_built_from_the_folder_offline_then_found_complete(tmp_path, monkeypatch):
    wheels, root = tiny_engine(tmp_path)
    env = offline_pip_env()
    for k in set(os.environ) - set(env):
        monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    venv = tmp_path / "venv"
    p = engine_venv.plan(CPU_FROM_INDEX, venv, root=root, venv_exists=False, wheels=wheels, editable=False)
    engine_venv.run(p, log=lambda _line: None)
    py = engine_venv.venv_python(venv)
    check = subprocess.run([str(py), "-c", "import tiny_engine, dd_tiny_dep, torch; print(torch.__file__, dd_tiny_dep.ANSWER)"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert check.stdout.split()[0].startswith(str(venv)) and check.stdout.split()[1] == "42"
    found = engine_venv.installed_torch(py)
    assert found == {"version": "2.13.0", "cuda": None, "hip": None}
    again = engine_venv.plan(CPU_FROM_INDEX, venv, root=root, found_torch=found, wheels=wheels, editable=False)
    assert again.commands == [] and len(again.skipped) == 3


@pytest.mark.slow
def test_a_requirement_missing_from_the_folder_fails_without_reaching_any_index(tmp_path):
    wheels, root = tiny_engine(tmp_path)
    (wheels / "dd_tiny_dep-1.2-py3-none-any.whl").unlink()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    p = engine_venv.plan(CPU_FROM_INDEX, venv, root=root, venv_exists=False, wheels=wheels, editable=False)
    assert p.constraints is not None
    p.constraints.write_text(p.constraint_text)
    pip = [str(sys.executable), "-m", "pip", "--python", str(engine_venv.venv_python(venv))]
    out = subprocess.run(pip + p.commands[-1][3:], capture_output=True, text=True, env=offline_pip_env(),
                         timeout=300)
    assert out.returncode != 0
    assert "No matching distribution found for dd-tiny-dep" in out.stderr
    assert "127.0.0.1:9" not in out.stderr and "Retrying" not in out.stderr     # no index was tried
