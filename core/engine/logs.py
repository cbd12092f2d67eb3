"""Engine logging: a rotating file in the app's log folder (``core.contract.paths.log_dir``)."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(process)d %(threadName)s %(levelname)s %(name)s: %(message)s"


def setup(name: str = "engine", level: int = logging.INFO) -> Path | None:
    """Send every log record (and Python warnings) to ``<log dir>/<name>.log``; returns its path.
    Falls back to stderr when the folder cannot be written."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.setLevel(level)
    path = None
    try:
        from ..contract import paths

        folder = paths.log_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.log"
        handler: logging.Handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=5 << 20, backupCount=3, encoding="utf-8")
    except Exception as e:  # no writable log folder: stderr is still not the protocol stream
        print(f"engine: cannot write the log file ({e}); logging to stderr", file=sys.stderr)
        handler = logging.StreamHandler(sys.stderr)
        path = None
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    logging.captureWarnings(True)
    return path
