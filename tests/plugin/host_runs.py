"""Runs of ``krita_scripts/dd_host_check.py`` (the Krita host suite's script) in its three places: real
Krita 5.1.5 (kritarunner), the fake Krita on PyQt6 (this venv) and on PyQt5 (the system Python).  The
inputs are made here, the same bytes for every place."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from ..conftest import ROOT
from .krita_support import install_plugin, run_kritarunner

SCRIPTS = Path(__file__).parent / "krita_scripts"
FAKE_RUNNER = ROOT / "tests" / "fake_krita" / "kritarunner.py"
SYSTEM_PYTHON = "/usr/bin/python3"

DEPTHS = {  # name: (depth, numpy dtype of one channel)
    "u8": ("U8", np.uint8),
    "u16": ("U16", np.uint16),
    "f16": ("F16", np.float16),
    "f32": ("F32", np.float32),
}
PLACES = {  # place: (binding, Krita version prefix)
    "krita": ("PyQt5", "5."),
    "fake-qt6": ("PyQt6", "6."),
    "fake-qt5": ("PyQt5", "5.1"),
}


def make_pixels(rng, h, w, dtype):
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        px = rng.integers(0, int(info.max) + 1, (h, w, 4), dtype=np.int64).astype(dtype)
        px[..., 3] = np.maximum(px[..., 3], 1)       # no fully transparent pixel: exact bounds = rect
        return px
    px = rng.random((h, w, 4)).astype(dtype)
    px[..., 3] = np.maximum(px[..., 3], dtype(0.05))
    return px


CASES = {
    "u8": dict(w=40, h=30, read_rect=[3, 4, 20, 15], selection_rect=[5, 6, 12, 10], patch_rect=[7, 5, 10, 8],
               preview=True, extras=True, save_kra=True, probes=True),
    "u16": dict(w=24, h=20, read_rect=[2, 3, 17, 11], selection_rect=[4, 4, 9, 7], patch_rect=[1, 9, 12, 6]),
    "f16": dict(w=24, h=20, read_rect=[0, 0, 24, 20], selection_rect=[10, 2, 8, 9], patch_rect=[0, 0, 5, 5]),
    "f32": dict(w=24, h=20, read_rect=[5, 1, 9, 18], selection_rect=[0, 0, 24, 20], patch_rect=[19, 15, 5, 5]),
}


def soft_mask(h, w):
    """Soft selection: a ramp 0..255 with a zero border (so the bounds are inside the rect)."""
    yy, xx = np.mgrid[0:h, 0:w]
    m = ((xx + 1) * 255 // w + (yy * 7)) % 256
    m = m.astype(np.uint8)
    m[0, :] = 0
    m[:, -1] = 0
    m[h // 2, w // 2] = 255
    return m


EXPAND = dict(w=40, h=30, growth=[6, 4, 20, 0], selection_rect=[30, 22, 20, 16])
_EXPAND_PATCH: dict = {}


def expand_inputs(work: Path, rng, models) -> dict:
    """The expand part of the run: a layer, and the tiny model's expand result for it (made once per
    session, so every place gets the same bytes)."""
    from core.contract.jobs import ImageBuffer, JobRequest, Options, Params
    from core.pipelines import run_job

    w, h = EXPAND["w"], EXPAND["h"]
    src = make_pixels(rng, h, w, np.uint8)
    if not _EXPAND_PATCH:
        options = Options(**dict(zip(("expand_left", "expand_top", "expand_right", "expand_bottom"), EXPAND["growth"])))
        req = JobRequest("expand", Params(prompt="more", steps=1, seed=3), options,
                         image=ImageBuffer(w, h, "BGRA_U8", src.tobytes()))
        patch = run_job(req, models).patches[0]
        _EXPAND_PATCH.update(rect=[patch.x, patch.y, patch.image.width, patch.image.height],
                             data=bytes(patch.image.data))
    (work / "expand_source.in").write_bytes(src.tobytes())
    (work / "expand_patch.in").write_bytes(_EXPAND_PATCH["data"])
    return {**EXPAND, "source": "expand_source.in", "patch": "expand_patch.in", "patch_rect": _EXPAND_PATCH["rect"]}


def make_inputs(work: Path, models) -> dict:
    """The input files of one run (the same bytes for every place: seeded)."""
    rng = np.random.default_rng(7)
    data = {}
    cases = []
    for name, case in CASES.items():
        depth, dtype = DEPTHS[name]
        w, h = case["w"], case["h"]
        src = make_pixels(rng, h, w, dtype)
        sx, sy, sw, sh = case["selection_rect"]
        sel = soft_mask(sh, sw)
        px, py, pw, ph = case["patch_rect"]
        patch = make_pixels(rng, ph, pw, dtype)
        for suffix, arr in (("source", src), ("sel", sel), ("patch", patch)):
            (work / f"{name}_{suffix}.in").write_bytes(np.ascontiguousarray(arr).tobytes())
        data[name] = dict(source=src, sel=sel, patch=patch, dtype=dtype)
        cases.append(dict(name=name, depth=depth, source=f"{name}_source.in", selection=f"{name}_sel.in",
                          patch=f"{name}_patch.in", **case))
    cmyk = rng.integers(0, 256, (12, 10, 5), dtype=np.uint8)
    cmyk[..., 4] = 255
    (work / "cmyk_source.in").write_bytes(cmyk.tobytes())
    spec = {"cases": cases, "cmyk": {"w": 10, "h": 12, "source": "cmyk_source.in"},
            "expand": expand_inputs(work, rng, models)}
    data["expand"] = spec["expand"]
    (work / "spec.json").write_text(json.dumps(spec))
    return data


def run_fake(python: str, work: Path, plugins: Path, qt: str, version: str) -> subprocess.CompletedProcess:
    """dd_host_check on the fake Krita in a fresh process (``python`` with ``qt``'s binding)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "DD_QT_API", "QT_API")}
    env.update(PYTHONPATH=os.pathsep.join([str(plugins), str(SCRIPTS)]), QT_QPA_PLATFORM="offscreen",
               FAKE_KRITA_QT=qt, FAKE_KRITA_VERSION=version)
    if python == SYSTEM_PYTHON:
        env.pop("VIRTUAL_ENV", None)
    return subprocess.run([python, str(FAKE_RUNNER), "-s", "dd_host_check", "-f", "main", str(work)], env=env,
                          capture_output=True, text=True, errors="replace", timeout=600)


def system_pyqt5() -> bool:
    return os.path.exists(SYSTEM_PYTHON) and subprocess.run(
        [SYSTEM_PYTHON, "-c", "import PyQt5.QtWidgets"], capture_output=True).returncode == 0


def run_place(place: str, tmp_path_factory, models, krita_home=None):
    work = tmp_path_factory.mktemp(f"host-{place}")
    plugins = install_plugin(tmp_path_factory.mktemp(f"res-{place}"))
    data = make_inputs(work, models)
    if place == "krita":
        proc = run_kritarunner(krita_home, [plugins, SCRIPTS], "dd_host_check", [str(work)])
    elif place == "fake-qt6":
        proc = run_fake(sys.executable, work, plugins, "6", "6.0.0")
    else:
        proc = run_fake(SYSTEM_PYTHON, work, plugins, "5", "5.1.5")
    results_file = work / "results.json"
    assert results_file.exists(), f"{place} wrote no results (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n" \
                                  f"{proc.stderr[-3000:]}"
    results = json.loads(results_file.read_text())
    assert "crash" not in results, results["crash"]
    return work, results, data


