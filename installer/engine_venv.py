"""The engine's virtual environment: the right torch for the hardware, then the engine's requirements.

Standard library only (this creates the environment the other commands run in).  ``plan()`` is the
pure part: the exact commands, which ``--dry-run`` prints and the tests check; ``run()`` executes them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .torch_choice import TorchChoice

ROOT = Path(__file__).resolve().parent.parent      # the engine root: the folder holding core/ and installer/
MIN_PYTHON = (3, 10)


def default_venv() -> Path:
    """``DD_ENGINE_VENV``, else ``<engine root>/.venv`` (the one ./run.sh and ./test.sh use too)."""
    env = os.environ.get("DD_ENGINE_VENV")
    return Path(env).expanduser() if env else ROOT / ".venv"


def venv_python(venv: Path, windows: bool | None = None) -> Path:
    windows = os.name == "nt" if windows is None else windows
    return venv / ("Scripts/python.exe" if windows else "bin/python")


@dataclass
class EnginePlan:
    venv: Path
    python: Path
    choice: TorchChoice
    commands: list[list[str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)   # steps already done (idempotence)
    constraints: Path | None = None
    constraint_text: str = ""
    stamp: Path | None = None
    wheels: Path | None = None


def source_args(choice: TorchChoice | None, wheels: Path | None) -> list[str]:
    """Where pip takes packages from: only the wheel folder (``--no-index --find-links DIR``: offline, for
    a studio without internet or a prepared USB stick), else the torch choice's index (torch), else pip's
    configured index."""
    if wheels is not None:
        return ["--no-index", "--find-links", str(wheels)]
    if choice is not None and choice.index_url:
        return ["--index-url", choice.index_url]
    return []


def describe(choice: TorchChoice, wheels: Path | None = None) -> str:
    """The torch build and where it comes from, for the setup page and ``engine``'s output."""
    if wheels is None:
        return choice.describe()
    return (f"{choice.requirement} ({choice.backend}{', ' + choice.build if choice.build else ''}) from the "
            f"wheel folder {wheels}: {choice.reason}")


def installed_torch(python: Path) -> dict | None:
    """``{"version", "cuda", "hip"}`` of the torch inside an environment, or None."""
    if not python.exists():
        return None
    code = ("import json, torch; print(json.dumps({'version': torch.__version__, 'cuda': torch.version.cuda, "
            "'hip': getattr(torch.version, 'hip', None)}))")
    try:
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def torch_matches(found: dict | None, choice: TorchChoice) -> bool:
    """Does the installed torch satisfy the choice (version and backend)?"""
    if not found:
        return False
    version = found.get("version", "")
    base, _, local = version.partition("+")
    req = choice.requirement.replace(" ", "")
    if req.startswith("torch==") and base != req[len("torch=="):].split("+")[0]:
        return False
    if not req.startswith("torch=="):
        return False  # a range: let pip decide (it keeps a satisfying install)
    if choice.backend == "cuda":
        return bool(found.get("cuda")) and (choice.build is None or local == choice.build)
    if choice.backend == "rocm":
        return bool(found.get("hip"))
    return not found.get("cuda") and not found.get("hip")


def plan(choice: TorchChoice, venv: Path | None = None, *, base_python: str | None = None, root: Path = ROOT,
         found_torch: dict | None = None, venv_exists: bool | None = None, editable: bool = True,
         wheels: Path | None = None) -> EnginePlan:
    """The commands that bring ``venv`` to the chosen torch plus the engine's requirements.

    ``wheels``: a folder of wheel files; then both pip steps install from it alone (no index: nothing is
    downloaded, and a package missing from the folder fails the step with pip's message).

    Pure given ``found_torch`` (what ``installed_torch`` reported) and ``venv_exists``.
    The project install runs under a constraints file pinning the torch just installed, so pip can
    never replace it with another build.
    """
    venv = Path(venv or default_venv())
    python = venv_python(venv)
    venv_exists = python.exists() if venv_exists is None else venv_exists
    wheels = Path(wheels).expanduser().absolute() if wheels is not None else None
    p = EnginePlan(venv, python, choice, wheels=wheels)
    if venv_exists:
        p.skipped.append(f"virtual environment {venv} exists")
    else:
        p.commands.append([base_python or sys.executable, "-m", "venv", str(venv)])
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
    if venv_exists and torch_matches(found_torch, choice):
        p.skipped.append(f"torch {found_torch['version']} already matches {choice.requirement} ({choice.backend})")
        pinned = f"torch=={found_torch['version'].split('+')[0]}"
    else:
        if venv_exists and found_torch:  # another build (e.g. CPU where CUDA is wanted): replace it
            p.commands.append([str(python), "-m", "pip", "uninstall", "-y", "torch"])
        p.commands.append(pip + [choice.requirement] + source_args(choice, wheels))
        pinned = choice.requirement
    p.constraints = venv / "dd-torch-constraint.txt"
    p.constraint_text = pinned + "\n"
    p.stamp = venv / f".dd-engine-{requirements_key(root, pinned, editable)}"
    if p.commands or not p.stamp.exists():
        p.commands.append(pip + ["-c", str(p.constraints)] + source_args(None, wheels)
                          + (["-e", str(root)] if editable else [str(root)]))
    else:
        p.skipped.append("the engine's requirements are installed (pyproject.toml unchanged)")
    return p


def requirements_key(root: Path, pinned: str, editable: bool) -> str:
    """Changes when the engine's requirements (pyproject.toml) or the torch pin change."""
    import hashlib

    h = hashlib.sha256()
    try:
        h.update((Path(root) / "pyproject.toml").read_bytes())
    except OSError:
        pass
    h.update(f"{pinned}|{editable}".encode())
    return h.hexdigest()[:16]


def check_python(version: tuple[int, int] = tuple(sys.version_info[:2])) -> None:
    if version < MIN_PYTHON:
        raise RuntimeError(f"the engine needs Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer; this is "
                           f"{version[0]}.{version[1]}. Run the installer with a newer python3.")


def format_command(cmd: list[str]) -> str:
    import shlex

    return " ".join(shlex.quote(c) for c in cmd)


def run(p: EnginePlan, *, log=print) -> float:
    """Execute the plan; returns the seconds it took.  Raises CalledProcessError on a failed step."""
    t0 = time.monotonic()
    for cmd in p.commands:
        if "-c" in cmd and p.constraints is not None:
            p.constraints.parent.mkdir(parents=True, exist_ok=True)
            p.constraints.write_text(p.constraint_text)
        log(f"$ {format_command(cmd)}")
        subprocess.run(cmd, check=True)
    if p.stamp is not None:
        for old in p.venv.glob(".dd-engine-*"):
            old.unlink()
        p.stamp.write_text("ok\n")
    return time.monotonic() - t0
