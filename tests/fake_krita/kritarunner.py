"""``kritarunner -s MODULE -f FUNCTION ARGS...`` on the fake ``krita`` module: imports ``pykrita`` and
``krita`` first (as Krita does before any script), then MODULE from sys.path, and calls
FUNCTION([ARGS...]).  Run it as a file (``python tests/fake_krita/kritarunner.py ...``) with the fake's
``site`` folder and the script's folders on PYTHONPATH, and QT_QPA_PLATFORM=offscreen."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "site"))

import krita  # noqa: F401
import pykrita  # noqa: F401  (first, as in Krita)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-s", dest="script", required=True)
    ap.add_argument("-f", dest="function", default="__main__")
    ap.add_argument("args", nargs="*")
    a = ap.parse_args(argv)
    module = importlib.import_module(a.script)
    getattr(module, a.function)(a.args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
