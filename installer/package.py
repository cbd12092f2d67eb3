"""``python -m installer package``: the release zip an artist imports with Krita's own
*Tools ▸ Scripts ▸ Import Python Plugin from File…*.

Krita 5.1's importer (``plugins/python/plugin_importer/plugin_importer.py``) finds ``*.desktop`` files,
reads ``X-KDE-Library`` from each, and takes the folder of that name only when the zip lists the folder
itself (an entry ``diffusion_dock/``) and its ``__init__.py``; it copies that folder into ``pykrita/``,
the ``.desktop`` beside it and a matching ``diffusion_dock.action`` into ``actions/``.  Nothing else
in the zip is copied, so everything the first-run setup needs travels inside the package folder:

- ``diffusion_dock/`` as ``python -m installer plugin`` lays it out (``_core/``, ``vendor/``), without
  the standalone editor;
- ``diffusion_dock/_engine/``: the engine and the installer (``core/``, ``installer/``,
  ``pyproject.toml``), from which the setup creates the engine's environment;
- ``diffusion_dock/version.json``: version and commit.
Standard library only.
"""

from __future__ import annotations

import json
import subprocess
import time
import zipfile
from pathlib import Path

from core import __version__
from core.contract import atomic

from .plugin_install import DEFAULT_SOURCE, PLUGIN_ID, ROOT, _walk, file_map

ENGINE_FOLDER = "_engine"
ENGINE_PARTS = ("core", "installer", "pyproject.toml", "README.md", "LICENSE")
VERSION_FILE = "version.json"
FIXED_TIME = (2026, 1, 1, 0, 0, 0)      # entries carry one date: the same sources give the same zip


def commit_of(root: Path = ROOT) -> str:
    """The checkout's commit (with ``+dirty`` when files differ from it), or "unknown" outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha + ("+dirty" if dirty else "")) if sha else "unknown"


def zip_entries(engine_root: Path = ROOT, source: Path = DEFAULT_SOURCE,
                vendor_dirs: dict[str, Path] | None = None) -> dict[str, Path]:
    """Name in the zip → source file."""
    out: dict[str, Path] = {}
    for dest, src in file_map(source, engine_root, vendor_dirs).items():
        if dest.startswith("pykrita/"):
            out[dest[len("pykrita/"):]] = src
        elif dest.startswith("actions/"):
            out[dest[len("actions/"):]] = src
    for part in ENGINE_PARTS:
        path = engine_root / part
        if path.is_dir():
            for f in _walk(path):
                out[f"{PLUGIN_ID}/{ENGINE_FOLDER}/{part}/{f.relative_to(path).as_posix()}"] = f
        elif path.is_file():
            out[f"{PLUGIN_ID}/{ENGINE_FOLDER}/{part}"] = path
    return out


def build(out_dir: Path, engine_root: Path = ROOT, source: Path = DEFAULT_SOURCE,
          vendor_dirs: dict[str, Path] | None = None) -> Path:
    """Write ``diffusion_dock-<version>.zip`` into ``out_dir``; returns its path."""
    entries = zip_entries(engine_root, source, vendor_dirs)
    stamp = {"version": __version__, "commit": commit_of(engine_root),
             "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    folders = sorted({name.rsplit("/", i)[0] + "/" for name in entries for i in range(1, name.count("/") + 1)})
    target = Path(out_dir) / f"{PLUGIN_ID}-{__version__}.zip"
    with atomic.open_atomic(target, "wb", parents=True) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
        for folder in folders:         # Krita's importer finds the package by its folder entry
            z.writestr(zipfile.ZipInfo(folder, FIXED_TIME), b"")
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, entries[name].read_bytes())
        z.writestr(zipfile.ZipInfo(f"{PLUGIN_ID}/{VERSION_FILE}", FIXED_TIME), json.dumps(stamp, indent=1) + "\n")
    return target
