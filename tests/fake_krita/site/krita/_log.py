"""Which Krita API methods were called, and with how many arguments (for the .sip check of what the
plugin really calls): every public method of a class decorated with ``@api`` records
(Krita class, method, positional argument count) into ``CALLS``."""

from __future__ import annotations

import functools
import os
import sys

from . import _qt

CALLS: set[tuple[str, str, int]] = set()
HERE = os.path.dirname(os.path.abspath(__file__))
KRITA_VERSION = os.environ.get("FAKE_KRITA_VERSION", "").strip() or ("6.0.0" if _qt.QT_MAJOR == 6 else "5.1.5")
KRITA_51 = KRITA_VERSION.startswith("5.1")


def api(cls):
    """Record the calls of ``cls``'s public methods under the Krita class name ``cls.__name__``."""
    name = cls.__name__
    for attr, fn in list(vars(cls).items()):
        if attr.startswith("_") or not callable(fn) or isinstance(fn, type):
            continue
        if type(fn).__name__ in ("pyqtSignal", "pyqtBoundSignal"):
            continue
        static = isinstance(vars(cls)[attr], staticmethod)
        target = fn.__func__ if static else fn

        def wrap(f=target, a=attr, s=static):
            @functools.wraps(f)
            def call(*args, **kwargs):
                if not os.path.abspath(sys._getframe(1).f_code.co_filename).startswith(HERE):   # not the fake itself
                    CALLS.add((name, a, len(args) - (0 if s else 1) + len(kwargs)))
                return f(*args, **kwargs)
            return staticmethod(call) if s else call

        setattr(cls, attr, wrap())
    return cls
