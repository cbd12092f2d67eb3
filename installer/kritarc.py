"""Read and change one key of Krita's ``kritarc`` (a KConfig INI file) without touching the rest.

configparser would rewrite the whole file (lower-cased keys, lost ``[$i]`` markers and comments), so
this edits lines: the ``[python]`` group's ``enable_<plugin>`` key is replaced in place or appended.
The group and key are those of Krita 5.1.5's PythonPluginManager (``KConfigGroup(..., "python")``,
``"enable_" + module name``); Krita 6's could not be read here and are assumed the same.
"""

from __future__ import annotations

import re
from pathlib import Path

from core.contract import atomic

GROUP = "python"


def _group_of(line: str) -> str | None:
    m = re.match(r"^\s*\[([^\]]*)\]", line)
    return m.group(1) if m else None


def read_key(path: Path, key: str, group: str = GROUP) -> str | None:
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    except OSError:
        return None
    current = None
    for line in lines:
        g = _group_of(line)
        if g is not None:
            current = g
            continue
        if current == group:
            k, sep, v = line.partition("=")
            if sep and k.strip() == key:
                return v.strip()
    return None


def write_key(path: Path, key: str, value: str, group: str = GROUP) -> str | None:
    """Set ``key=value`` in ``[group]``; returns the previous value (None when absent)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
            text = f.read()  # newline="": keep \r\n as it is
    except FileNotFoundError:
        text = ""
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines()
    previous = None
    current = None
    group_end = None      # index after the last line of the group
    replaced = False
    for i, line in enumerate(lines):
        g = _group_of(line)
        if g is not None:
            current = g
            if g == group:
                group_end = i + 1
            continue
        if current == group:
            k, sep, v = line.partition("=")
            if sep and k.strip() == key:
                if previous is None:
                    previous = v.strip()
                    lines[i] = f"{key}={value}"
                    replaced = True
                    continue
            if line.strip():
                group_end = i + 1
    if not replaced:
        if group_end is None:
            if lines and lines[-1].strip():
                lines.append("")
            lines += [f"[{group}]", f"{key}={value}"]
        else:
            lines.insert(group_end, f"{key}={value}")
    out = newline.join(lines) + newline
    if out != text:
        atomic.write_text(path, out, encoding="utf-8", errors="surrogateescape", newline="", parents=True)
    return previous
