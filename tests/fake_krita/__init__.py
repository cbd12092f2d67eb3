"""A fake of Krita's Python API for tests (``site/krita``, ``site/pykrita.py``), checked against the
signatures of Krita's own .sip files (``krita_api_*.json``, written by ``sip_signatures.py``).

- In a subprocess: put ``site`` on PYTHONPATH (or run ``kritarunner.py``); ``pykrita`` then makes the
  plugin believe it runs inside Krita (5.1.5 on PyQt5, 6.0 on PyQt6; ``FAKE_KRITA_QT``,
  ``FAKE_KRITA_VERSION``).
- In this process: ``load_in_process()`` registers the fake as ``krita`` without making ``pykrita``
  importable, so the plugin's Qt shim keeps the choice it made outside Krita.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SITE = HERE / "site"
API_FILES = {"5.1": HERE / "krita_api_5.1.json", "6": HERE / "krita_api_6.json"}


def load_in_process():
    """The fake ``krita`` module, imported into this process as ``krita``."""
    if "krita" in sys.modules:
        return sys.modules["krita"]
    spec = importlib.util.spec_from_file_location("krita", SITE / "krita" / "__init__.py",
                                                  submodule_search_locations=[str(SITE / "krita")])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["krita"] = module
    spec.loader.exec_module(module)
    return module


def load_api(version: str) -> dict:
    """The signature data of one Krita version ("5.1" or "6"): {"meta": ..., "classes": ...}."""
    return json.loads(API_FILES[version].read_text())
