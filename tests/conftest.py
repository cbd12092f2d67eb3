"""Shared fixtures.  Tests never see the user's real models, caches or network."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["HF_HUB_OFFLINE"] = "1"
# huggingface_hub fixes its cache folder when first imported (core.models.hub reads it from there): point
# it into a temporary folder before any test module imports it, so no test ever sees the user's cache.
for _var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
    os.environ.pop(_var, None)
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="dd-test-hf-")
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# Engines compile their UNets by default once idle (issue 22.2): minutes of two cores each.  The engines
# tests start do not, unless a test asks for it (--compile wins over DD_COMPILE).
os.environ["DD_COMPILE"] = "0"

from core.models import env as engine_env  # noqa: E402

engine_env.apply()

CI = os.environ.get("CI", "").strip().lower() == "true"


def require(condition, reason: str) -> None:
    """Skip (or, under CI=true, fail) unless ``condition`` holds."""
    if condition:
        return
    if CI:
        pytest.fail(f"{reason} -- under CI=true this is a failure, not a skip")
    pytest.skip(reason)


def pytest_addoption(parser):
    parser.addoption("--long", action="store_true",
                     help="the full counts of the reliability figures (10,000 fuzzed frames, 100 engine kills, "
                          "...); the same as DD_TEST_LONG=1")


def pytest_configure(config):
    if config.getoption("--long"):     # before the test modules are imported: they read it at import
        os.environ["DD_TEST_LONG"] = "1"


def pytest_runtest_setup(item):
    """Tests marked ``krita`` need the real Krita from apt (``krita``/``kritarunner``; with
    ``@pytest.mark.krita(gui=True)`` also ``xvfb-run``).  Without them they are skipped, except under
    ``CI=true``, where a skip would hide a broken CI machine: there it is a failure."""
    marker = item.get_closest_marker("krita")
    if marker is None:
        return
    require(shutil.which("kritarunner") and shutil.which("krita"),
            "Krita is not installed (apt-get install krita python3-pyqt5 xvfb xauth)")
    if marker.kwargs.get("gui"):
        require(shutil.which("xvfb-run"), "xvfb-run is not installed (apt-get install xvfb xauth)")


@pytest.fixture(scope="session", autouse=True)
def isolated_app_dirs(tmp_path_factory):
    """App folders and the HF cache point into a temporary folder for the whole session."""
    base = tmp_path_factory.mktemp("appdirs")
    env = {
        "DD_MODELS_DIR": str(base / "models"),
        "DD_LOG_DIR": str(base / "logs"),
        "DD_CACHE_DIR": str(base / "cache"),
        "DD_RESULTS_DIR": str(base / "results"),
        "DD_CONFIG_DIR": str(base / "config"),
        "TORCHINDUCTOR_CACHE_DIR": str(base / "cache" / "inductor"),
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield base
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """All five tiny pipelines, saved in diffusers format under <root>/<catalogue key>."""
    from core.devtools.tiny_models import build_all

    root = tmp_path_factory.mktemp("tiny-models")
    build_all(root)
    return root


@pytest.fixture(scope="session")
def policy():
    from core.models.device import current_policy

    return current_policy()


@pytest.fixture(scope="session")
def models(tiny_root, policy):
    """A model manager that finds the tiny models through the normal resolver (models-folder layout)."""
    from core.models.manager import ModelManager

    return ModelManager(policy, models_dir=tiny_root, hub_cache=tiny_root / "no-hub-cache", capacity=8)


@pytest.fixture(scope="module")
def exact_models(tiny_root):
    """The tiny models in float32 on the CPU: results that do not depend on the batch (bfloat16 matmuls
    round differently for a batch of two than for one image).  Unloaded after the module, so no other
    test finds their files still mapped."""
    from core.models.device import choose_policy, probe
    from core.models.manager import ModelManager

    mm = ModelManager(choose_policy(probe(), "cpu", "float32"), models_dir=tiny_root,
                      hub_cache=tiny_root / "no-hub-cache", capacity=8)
    yield mm
    mm.unload_all()


@pytest.fixture(scope="module")
def loop():
    """An asyncio event loop running in a thread, for the engine/client tests of one module."""
    from .engine_helpers import LoopThread

    lt = LoopThread()
    yield lt
    lt.close()
