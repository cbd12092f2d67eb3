"""Engine logging: a rotating file in the app's log folder (``core.contract.paths.log_dir``)."""

from __future__ import annotations

import logging
import logging.handlers
import re
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(process)d %(threadName)s %(levelname)s %(name)s: %(message)s"
# Characters that could end a log line or fake another one, and what UTF-8 cannot write (lone surrogates).
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def escape(text: str) -> str:
    """``text`` on one line: control characters, line separators and lone surrogates as escapes
    (``\\n``, ``\\x1b``, ``\\ud800``).  Whatever a client sent stays inside its own log line."""
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class OneLineFormatter(logging.Formatter):
    """Each record is one line (its message escaped); a traceback follows on lines that start with
    "  | ", so nothing in a record can pass for the start of another record."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape(record.message)
        return super().formatMessage(record)

    def formatException(self, ei) -> str:
        text = super().formatException(ei)
        return "\n".join("  | " + escape(line) for line in text.splitlines())

    def formatStack(self, stack_info: str) -> str:
        return "\n".join("  | " + escape(line) for line in stack_info.splitlines())


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
        reason = getattr(e, "strerror", None) or "the folder is not writable"
        print(f"engine: cannot write the log file ({reason}); logging to stderr", file=sys.stderr)
        handler = logging.StreamHandler(sys.stderr)
        path = None
    handler.setFormatter(OneLineFormatter(FORMAT))
    root.addHandler(handler)
    logging.captureWarnings(True)
    return path
