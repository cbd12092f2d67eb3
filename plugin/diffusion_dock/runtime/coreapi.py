"""Where the plugin gets the engine's pure modules and qasync from.  Use it everywhere.

Installed in Krita (``pykrita/diffusion_dock/``) the package is self-contained: the installer
copies the engine's standard-library-only packages (``core/contract/`` and ``core/link/``) into
``diffusion_dock/_core/`` and qasync into ``diffusion_dock/vendor/qasync/``, and both are imported
relatively, so no generic top-level name (``core``, ``qasync``) is put on Krita's ``sys.path``.  In a
source checkout neither folder exists and this module falls back to the repository's ``core`` package
and the virtual environment's qasync.

    from ..runtime.coreapi import core, jobs, geometry, events, modes, atomic, load, qasync

Type checkers see these names as the modules of ``core.contract`` (the ``TYPE_CHECKING`` block).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import qt

_PKG = __name__.rpartition(".")[0].rpartition(".")[0]   # diffusion_dock (this module is in runtime/)
_HERE = Path(__file__).resolve().parent.parent           # the diffusion_dock folder
REPO_ROOT = _HERE.parent.parent   # only meaningful in a source checkout


def _source_core():
    """The repository's ``core`` package (source checkout), verified to be that one."""
    expected = REPO_ROOT / "core"
    if not (expected / "contract" / "jobs.py").is_file():
        raise ImportError(f"{_PKG}: neither the installed engine modules ({_HERE / '_core'}) nor a source "
                          f"checkout ({expected}) were found; reinstall the plugin")
    if str(REPO_ROOT) not in sys.path and "core" not in sys.modules:
        sys.path.append(str(REPO_ROOT))
    module = importlib.import_module("core")
    found = Path(module.__file__).resolve().parent
    if found != expected:
        raise ImportError(f"{_PKG}: the module named 'core' comes from {found}, not from {expected}")
    return module


def _exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


if _exists(f"{_PKG}._core"):
    core = importlib.import_module(f"{_PKG}._core")
    INSTALLED = True
else:
    core = _source_core()
    INSTALLED = False



def load(name: str):
    """An engine module by its dotted name under ``core`` (e.g. "link.protocol", "link.client"), from
    wherever ``core`` came from.  Raises ImportError when it does not exist (yet) in this build."""
    return importlib.import_module(f"{core.__name__}.{name}")


if TYPE_CHECKING:   # type checkers read the repository's modules (and the client's types)
    from core.contract import (
        atomic,
        catalog,
        controls,
        events,
        expand,
        geometry,
        jobcontrol,
        jobs,
        modes,
        params,
        paths,
        plan,
        samplers,
    )
    from core.link.client import EngineClient, JobHandle  # noqa: F401
else:
    params = load("contract.params")
    jobs = load("contract.jobs")
    modes = load("contract.modes")
    geometry = load("contract.geometry")
    events = load("contract.events")
    catalog = load("contract.catalog")
    jobcontrol = load("contract.jobcontrol")
    plan = load("contract.plan")
    expand = load("contract.expand")
    paths = load("contract.paths")
    atomic = load("contract.atomic")
    samplers = load("contract.samplers")
    controls = load("contract.controls")


_qasync = None


def qasync():
    """The qasync module, bound to the binding ``qt`` chose.

    qasync picks its Qt from ``QT_API`` or from whatever is imported first; both could make it
    load a second Qt inside Krita, so ``QT_API`` is pinned to our binding while it imports.
    """
    global _qasync
    if _qasync is None:
        saved = os.environ.get("QT_API")
        os.environ["QT_API"] = qt.BINDING.lower()
        try:
            if _exists(f"{_PKG}.vendor.qasync"):
                _qasync = importlib.import_module(f"{_PKG}.vendor.qasync")
            else:
                _qasync = importlib.import_module("qasync")
        finally:
            if saved is None:
                os.environ.pop("QT_API", None)
            else:
                os.environ["QT_API"] = saved
    return _qasync
