"""``python -m installer setup``: the first-run setup the dock runs as a child process.

``--plan`` prints one JSON object (what was detected, the torch build, where, disk needed and free);
without it the setup runs its steps and writes one JSON object per line on stdout, the only thing
on stdout (``EVENTS``):

    {"ev": "step", "step": "environment", "state": "start" | "done" | "skip" | "fail", "text": ...}
    {"ev": "file", "model": "sd2-inpainting", "name": "unet [1/3]", "done": bytes, "total": bytes}
    {"ev": "log", "text": a line of pip's or the downloader's output}
    {"ev": "error", "text": what failed, "fix": doctor's fix line (or the step's own)}
    {"ev": "done", "python": the engine's Python}

Steps: environment (the venv), torch, packages (the engine's requirements), models (each file with
bytes; the downloader continues a partial file and skips verified ones, so starting again downloads
nothing twice), plugin (``engine.json`` beside the dock, so that it finds the engine) and check
(doctor).  Each step already done is reported ``skip``.  ``--wheels DIR``: torch and the packages come
from that folder of wheel files alone (pip ``--no-index --find-links DIR``).  SIGTERM (the dock's Cancel) ends the running
child and exits 130.  Standard library only: it runs with any Python 3.10+.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

STEPS = ("environment", "torch", "packages", "models", "plugin", "check")
# About what each part takes on disk once installed (bytes); the models' sizes are the hub's.
TORCH_BYTES = {"cuda": 4_500_000_000, "rocm": 6_000_000_000, "mps": 400_000_000, "cpu": 800_000_000}
PACKAGES_BYTES = 700_000_000
MODEL_BYTES = {"sd2-inpainting": 5_200_000_000, "sd2-depth": 5_400_000_000, "sd2-x4-upscaler": 3_600_000_000,
               "sd2-1": 5_200_000_000, "sd2-1-base": 5_200_000_000}
EVENTS_ENV = "DD_INSTALLER_EVENTS"      # set: the downloader reports each file's bytes as "file" events


class Cancelled(Exception):
    pass


def emit(ev: str, **fields) -> None:
    print(json.dumps({"ev": ev, **fields}, ensure_ascii=False), flush=True)


def file_reporter(label: str, size: int | None):
    """With ``DD_INSTALLER_EVENTS`` set (the dock's setup): a function reporting a file's bytes as JSON
    lines on stdout, at most 5 times a second."""
    if not os.environ.get(EVENTS_ENV):
        return None
    last = [0.0]

    def report(done: int, final: bool = False) -> None:
        now = time.monotonic()
        if final or now - last[0] >= 0.2:
            last[0] = now
            print(json.dumps({"ev": "file", "name": label, "done": done, "total": size or 0}), flush=True)

    return report


def _cpu_bf16() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _gpu_memory() -> list[str]:
    from .torch_choice import _run

    if not shutil.which("nvidia-smi"):
        return []
    out = _run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"]) or ""
    return [line.strip() for line in out.splitlines() if line.strip()]


def free_bytes(where: Path) -> int:
    p = Path(where)
    while not p.exists() and p.parent != p:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return 0


def plan(venv: Path, models: list[str], torch: str | None = None, wheels: Path | None = None) -> dict:
    from . import engine_venv
    from .torch_choice import UnsupportedHost, choose_torch, probe_host

    facts = probe_host()
    gpus = _gpu_memory() or list(facts.gpus)
    try:
        choice = choose_torch(facts, torch)
        torch_text, backend, problem = engine_venv.describe(choice, wheels), choice.backend, ""
    except (UnsupportedHost, ValueError) as e:
        torch_text, backend, problem = "", "cpu", str(e)
    if wheels is not None and not Path(wheels).is_dir():
        problem = problem or f"the wheel folder {wheels} does not exist"
    hardware = (", ".join(gpus) if gpus else
                f"no GPU: the CPU{' with bf16' if _cpu_bf16() else ' (no bf16: float32)'}")
    python = engine_venv.venv_python(venv)
    have_env = python.exists()
    needed = (0 if have_env else TORCH_BYTES.get(backend, 1_000_000_000) + PACKAGES_BYTES) \
        + sum(MODEL_BYTES.get(m, 0) for m in models)
    return {"hardware": hardware, "system": f"{facts.system} {facts.machine}", "torch": torch_text,
            "backend": backend, "problem": problem, "venv": str(venv), "installed": have_env,
            "models": models, "needed": needed, "free": free_bytes(venv), "wheels": str(wheels or "")}


def _terminate(signum, frame):
    raise Cancelled()


def run_child(cmd: list[str], env: dict | None = None) -> int:
    """Run ``cmd``, passing its JSON event lines through and wrapping every other line as a log event."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            env=env, errors="replace")
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            if line.startswith('{"ev": '):
                print(line, flush=True)
            elif line.strip():
                emit("log", text=line[-500:])
        return proc.wait()
    except Cancelled:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise


def _doctor_fix(python: Path, env: dict) -> tuple[list[tuple[str, str]], bool]:
    out = subprocess.run([str(python), "-m", "installer", "doctor"], capture_output=True, text=True, env=env,
                         errors="replace")
    problems, last = [], ""
    for line in out.stdout.splitlines():
        s = line.strip()
        if s.startswith("problem: "):
            last = s[len("problem: "):]
        elif s.startswith("fix: ") and last:
            problems.append((last, s[len("fix: "):]))
            last = ""
    return problems, out.returncode == 0


def setup(venv: Path, models: list[str], *, torch: str | None = None, plugin_dir: Path | None = None,
          wheels: Path | None = None) -> int:
    from . import engine_venv
    from .torch_choice import choose_torch, probe_host

    signal.signal(signal.SIGTERM, _terminate)
    step = "environment"
    try:
        if wheels is not None and not Path(wheels).is_dir():
            return _failed(step, f"the wheel folder {wheels} does not exist",
                           "choose the folder holding the .whl files, or leave \"Wheel folder\" empty to "
                           "download from the package index")
        choice = choose_torch(probe_host(), torch)
        python = engine_venv.venv_python(venv)
        found = engine_venv.installed_torch(python) if python.exists() else None
        p = engine_venv.plan(choice, venv, found_torch=found, wheels=wheels)
        by_step = {"environment": [c for c in p.commands if c[1:3] == ["-m", "venv"]],
                   "torch": [c for c in p.commands if c[1:3] != ["-m", "venv"] and "-c" not in c],
                   "packages": [c for c in p.commands if "-c" in c]}
        for step in ("environment", "torch", "packages"):
            if not by_step[step]:
                emit("step", step=step, state="skip", text="already done")
                continue
            emit("step", step=step, state="start", text=engine_venv.describe(choice, wheels) if step == "torch" else "")
            for cmd in by_step[step]:
                if "-c" in cmd and p.constraints is not None:
                    p.constraints.parent.mkdir(parents=True, exist_ok=True)
                    p.constraints.write_text(p.constraint_text)
                emit("log", text="$ " + engine_venv.format_command(cmd))
                if run_child(cmd) != 0:
                    return _failed(step, f"`{engine_venv.format_command(cmd)[:200]}` failed",
                                   f"check that the wheel folder {wheels} holds every package pip names in the "
                                   f"log, then press Install again" if wheels is not None else
                                   "check the network and the disk space, then press Install again: what is "
                                   "installed is kept")
            emit("step", step=step, state="done")
        if p.stamp is not None:
            for old in p.venv.glob(".dd-engine-*"):
                old.unlink()
            p.stamp.write_text("ok\n")
        env = dict(os.environ, DD_ENGINE_VENV=str(venv), HF_HUB_DISABLE_PROGRESS_BARS="1", **{EVENTS_ENV: "1"})
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(engine_venv.ROOT), env.get("PYTHONPATH")]))
        step = "models"
        emit("step", step=step, state="start", text=", ".join(models))
        if models and run_child([str(python), "-m", "installer", "models", "download", *models], env) != 0:
            return _failed(step, "a model could not be downloaded",
                           "press Install again when the connection is back: finished files are kept and a "
                           "partial file continues where it stopped")
        emit("step", step=step, state="done")
        step = "plugin"
        emit("step", step=step, state="start")
        if plugin_dir is not None:
            from core.contract import atomic

            from .plugin_install import ENGINE_JSON, engine_record

            atomic.write_bytes(plugin_dir / ENGINE_JSON, engine_record(python, engine_venv.ROOT, venv=venv,
                                                                        wheels=wheels))
        emit("step", step=step, state="done", text=str(plugin_dir or ""))
        step = "check"
        emit("step", step=step, state="start")
        problems, ready = _doctor_fix(python, env)
        if not ready:
            for problem, fix in problems or [("the check failed", "python3 -m installer doctor")]:
                emit("error", text=problem, fix=fix)
            emit("step", step=step, state="fail")
            return 3
        emit("step", step=step, state="done")
        emit("done", python=str(python))
        return 0
    except Cancelled:
        emit("step", step=step, state="fail", text="cancelled")
        return 130
    except OSError as e:
        return _failed(step, f"{e.strerror or 'a file could not be written'}: {e.filename or ''}"[:300],
                       "free some disk space or choose another location, then press Install again")
    except RuntimeError as e:      # engine_venv's own messages (a Python too old)
        return _failed(step, str(e)[:300], "install Python 3.10 or newer and press Install again")


def _failed(step: str, text: str, fix: str) -> int:
    emit("error", text=f"{step}: {text}", fix=fix)
    emit("step", step=step, state="fail")
    return 1
