"""Run one benchmark function in a fresh Python process (memory figures need a process of their own).

    python -m core.devtools.bench.child MODULE:FUNCTION '{"keyword": "arguments"}'

The function's JSON-ready result is printed on the last line after a marker, so whatever libraries
print on stdout cannot be mistaken for it.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
MARKER = "DD-BENCH-RESULT "


class ChildFailed(RuntimeError):
    pass


def run_child(target: str, kwargs: dict, *, timeout: float | None = None, env: dict | None = None,
              inline: bool = False) -> dict:
    """``target(**kwargs)`` in a fresh process; ``inline`` runs it in this one (the smoke run, whose
    figures mean nothing anyway, saves the interpreter starts)."""
    if inline:
        module, name = target.split(":")
        return json.loads(json.dumps(getattr(importlib.import_module(module), name)(**kwargs)))
    cmd = [sys.executable, "-m", "core.devtools.bench.child", target, json.dumps(kwargs)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                       env={**os.environ, **(env or {})})
    for line in reversed(r.stdout.splitlines()):
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER):])
    tail = [ln for ln in r.stderr.strip().splitlines() if ln.strip()][-3:]
    raise ChildFailed(f"{target} exited with {r.returncode}: {' | '.join(tail) or 'no output'}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    target, kwargs = argv[0], json.loads(argv[1]) if len(argv) > 1 else {}
    from ...models import env as engine_env

    engine_env.apply()
    module, name = target.split(":")
    result = getattr(importlib.import_module(module), name)(**kwargs)
    sys.stdout.write(MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
