"""``plugin`` / ``uninstall``: put the Krita plugin into Krita's resource folders, and take it out again.

Into each Krita resource folder (see ``krita_paths``):
- ``pykrita/diffusion_dock.desktop`` and the package ``pykrita/diffusion_dock/`` (without caches and
  without the standalone editor's subpackage);
- the small pure-Python packages the plugin needs (``VENDORED``: qasync, platformdirs) as
  ``pykrita/diffusion_dock/vendor/<name>/`` (unless the package already carries them);
- the engine's standard-library-only packages (``core.PURE_PACKAGES``: ``contract`` and ``link``), whole,
  as ``pykrita/diffusion_dock/_core/``: the plugin imports them through ``runtime.coreapi``;
- ``actions/diffusion_dock.action``;
- ``pykrita/diffusion_dock/engine.json``: the engine's Python and the engine root;
- ``enable_diffusion_dock=true`` in the ``[python]`` group of the matching kritarc.

Idempotent: unchanged files are not rewritten; files a previous version installed and this one does not
are removed.  A manifest (``pykrita/diffusion_dock/install-manifest.json``) lists what was installed;
``uninstall`` removes exactly that, the folders it created, and sets the kritarc key to false.
Standard library only.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from core.contract import atomic

from . import kritarc
from .krita_paths import KritaTarget, targets

PLUGIN_ID = "diffusion_dock"
ENABLE_KEY = f"enable_{PLUGIN_ID}"
MANIFEST = "install-manifest.json"
ENGINE_JSON = "engine.json"
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = ROOT / "plugin"
VENDORED = ("qasync", "platformdirs")   # pure-Python packages copied into the plugin's vendor/ folder
CACHE_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis"}
CACHE_SUFFIXES = (".pyc", ".pyo")
# Subpackages of plugin/diffusion_dock/ that belong to the standalone editor, not to the Krita install.
EDITOR_SUBPACKAGES = ("editor", "standalone")


class PluginInstallError(Exception):
    pass


@dataclass
class InstallResult:
    target: KritaTarget
    copied: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    kritarc_previous: str | None = None

    @property
    def resource_dir(self) -> Path:
        return self.target.resource_dir


# --- what gets installed ---------------------------------------------------------------------------

def _walk(folder: Path, skip_top: tuple[str, ...] = ()) -> list[Path]:
    out = []
    for root, dirs, files in os.walk(folder):
        rel_root = Path(root).relative_to(folder)
        dirs[:] = sorted(d for d in dirs if d not in CACHE_DIRS and not d.endswith(".egg-info")
                         and not (rel_root == Path(".") and d in skip_top))
        for f in sorted(files):
            if not f.endswith(CACHE_SUFFIXES):
                out.append(Path(root) / f)
    return out


def find_package(name: str, engine_python: Path | None = None) -> Path:
    """The folder of an installed pure-Python package: this Python's, else the engine environment's."""
    spec = importlib.util.find_spec(name)
    if spec and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    if engine_python and Path(engine_python).exists():
        try:
            out = subprocess.run([str(engine_python), "-c", f"import {name}, os; print(os.path.dirname({name}.__file__))"],
                                 capture_output=True, text=True, timeout=60)
            if out.returncode == 0 and out.stdout.strip():
                return Path(out.stdout.strip().splitlines()[-1])
        except (OSError, subprocess.SubprocessError):
            pass
    raise PluginInstallError(f"{name} is not installed here nor in the engine environment: "
                             f"run `python3 -m installer engine` first (or `pip install {name}`)")


def _license(package_dir: Path, name: str) -> Path | None:
    for dist in sorted(package_dir.parent.glob(f"{name}-*.dist-info")):
        for cand in (*dist.glob("licenses/*"), *dist.glob("LICENSE*")):
            if cand.is_file():
                return cand
    return None


def pure_packages(init: Path) -> tuple[str, ...]:
    """``PURE_PACKAGES`` of an engine's ``core/__init__.py``, read without importing it."""
    import ast

    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "PURE_PACKAGES" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    raise PluginInstallError(f"{init} does not define PURE_PACKAGES")


def engine_modules(engine_root: Path = ROOT) -> dict[str, Path]:
    """``_core/<path>`` → source: ``core/__init__.py`` and every file of the pure packages."""
    core = engine_root / "core"
    out = {"__init__.py": core / "__init__.py"}
    for name in pure_packages(core / "__init__.py"):
        folder = core / name
        if not (folder / "__init__.py").is_file():
            raise PluginInstallError(f"engine package core/{name}/ (listed in core.PURE_PACKAGES) is missing")
        for f in _walk(folder):
            if f.suffix == ".py":
                out[f"{name}/{f.relative_to(folder).as_posix()}"] = f
    return out


def file_map(source: Path, engine_root: Path = ROOT, vendor_dirs: dict[str, Path] | None = None,
             engine_python: Path | None = None) -> dict[str, Path]:
    """Destination (relative to the Krita resource folder, "/"-separated) → source file."""
    source = Path(source)
    desktop = source / f"{PLUGIN_ID}.desktop"
    package = source / PLUGIN_ID
    action = source / f"{PLUGIN_ID}.action"
    if not desktop.is_file() or not (package / "__init__.py").is_file():
        raise PluginInstallError(f"{source} does not hold the plugin ({desktop.name} and {PLUGIN_ID}/__init__.py)")
    library = _desktop_library(desktop)
    if library != PLUGIN_ID:
        raise PluginInstallError(f"{desktop}: X-KDE-Library is {library!r}, but Krita needs it to equal the "
                                 f"package folder name {PLUGIN_ID!r}")
    out: dict[str, Path] = {f"pykrita/{desktop.name}": desktop}
    for f in _walk(package, EDITOR_SUBPACKAGES):
        out[f"pykrita/{PLUGIN_ID}/{f.relative_to(package).as_posix()}"] = f
    for name in VENDORED:
        if (package / "vendor" / name / "__init__.py").is_file():
            continue
        folder = (vendor_dirs or {}).get(name) or find_package(name, engine_python)
        for f in _walk(folder):
            out[f"pykrita/{PLUGIN_ID}/vendor/{name}/{f.relative_to(folder).as_posix()}"] = f
        lic = _license(folder, name)
        if lic is not None:
            out[f"pykrita/{PLUGIN_ID}/vendor/{name}/LICENSE"] = lic
        if not (package / "vendor" / "__init__.py").is_file():
            out.setdefault(f"pykrita/{PLUGIN_ID}/vendor/__init__.py", ROOT / "installer" / "_vendor_init.py")
    for name, src in engine_modules(engine_root).items():
        out[f"pykrita/{PLUGIN_ID}/_core/{name}"] = src
    if action.is_file():
        out[f"actions/{action.name}"] = action
    return out


def _desktop_library(desktop: Path) -> str | None:
    for line in desktop.read_text(encoding="utf-8").splitlines():
        k, sep, v = line.partition("=")
        if sep and k.strip() == "X-KDE-Library":
            return v.strip()
    return None


def default_engine_python() -> Path:
    from .engine_venv import default_venv, venv_python

    py = venv_python(default_venv())
    return py if py.exists() else Path(sys.executable)


def engine_record(engine_python: Path, engine_root: Path = ROOT, *, venv: Path | None = None,
                  wheels: Path | None = None) -> bytes:
    """``engine.json``: the engine's Python and root; from the dock's setup also the environment's folder
    and the wheel folder it installed from, so that Repair in the dock starts from the same choices."""
    from core import __version__

    rec = {"python": str(Path(engine_python).absolute()), "engine_root": str(Path(engine_root).absolute()),
           "version": __version__}
    if venv is not None:
        rec["venv"] = str(Path(venv).absolute())
    if wheels is not None:
        rec["wheels"] = str(Path(wheels).absolute())
    return (json.dumps(rec, indent=2) + "\n").encode()


# --- install / uninstall ---------------------------------------------------------------------------

def _manifest_path(t: KritaTarget) -> Path:
    return t.pykrita / PLUGIN_ID / MANIFEST


def read_manifest(t: KritaTarget) -> dict | None:
    try:
        return json.loads(_manifest_path(t).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _missing_dirs(path: Path, stop: Path) -> list[Path]:
    """Folders from ``path`` up to ``stop`` (included) that do not exist yet."""
    out = []
    p = path
    while not p.exists() and (p == stop or stop in p.parents):
        out.append(p)
        p = p.parent
    return out


def _write_if_changed(dst: Path, data: bytes) -> bool:
    try:
        if dst.read_bytes() == data:
            return False
    except OSError:
        pass
    atomic.write_bytes(dst, data, parents=True)
    return True


def install_into(t: KritaTarget, files: dict[str, Path], engine_json: bytes, *, log=None) -> InstallResult:
    log = log or (lambda m: None)
    result = InstallResult(t)
    old = read_manifest(t) or {}
    created = set(old.get("created_dirs", []))
    wanted = {**{k: None for k in files}, f"pykrita/{PLUGIN_ID}/{ENGINE_JSON}": None}
    for rel in sorted(wanted):
        dst = t.resource_dir / rel
        created.update(str(d) for d in _missing_dirs(dst.parent, t.resource_dir))
        data = engine_json if rel.endswith(f"/{ENGINE_JSON}") and rel not in files else files[rel].read_bytes()
        (result.copied if _write_if_changed(dst, data) else result.unchanged).append(rel)
    for rel in old.get("files", []):
        if rel not in wanted:
            p = t.resource_dir / rel
            if p.is_file():
                p.unlink()
                result.removed.append(rel)
    _prune_empty(t, {rel for rel in old.get("files", []) if rel not in wanted})
    previous = kritarc.write_key(t.kritarc, ENABLE_KEY, "true")
    result.kritarc_previous = old.get("kritarc_previous", previous) if old else previous
    manifest = {"plugin": PLUGIN_ID, "files": sorted(wanted), "created_dirs": sorted(created),
                "kritarc": str(t.kritarc), "kritarc_previous": result.kritarc_previous}
    _write_if_changed(_manifest_path(t), (json.dumps(manifest, indent=2) + "\n").encode())
    log(f"{t.name} Krita ({t.resource_dir}): {len(result.copied)} files written, {len(result.unchanged)} "
        f"unchanged, {len(result.removed)} stale removed; enabled in {t.kritarc}")
    return result


def _prune_empty(t: KritaTarget, rels) -> None:
    """Remove folders left empty by removed files (inside the plugin's own folder only)."""
    pkg = t.pykrita / PLUGIN_ID
    dirs = sorted({(t.resource_dir / r).parent for r in rels}, key=lambda p: len(p.parts), reverse=True)
    for d in dirs:
        while d != pkg and pkg in d.parents and d.is_dir() and not any(d.iterdir()):
            d.rmdir()
            d = d.parent


def krita_running() -> bool:
    """Best effort (Linux): is a Krita process running?  It rewrites kritarc when it quits."""
    proc = Path("/proc")
    if not proc.is_dir():
        return False
    for p in proc.iterdir():
        if p.name.isdigit():
            try:
                if (p / "comm").read_text().strip() in ("krita", "krita.bin"):
                    return True
            except OSError:
                continue
    return False


def install(source: Path | None = None, krita_dirs: list[Path] | None = None, *, engine_python: Path | None = None,
            engine_root: Path = ROOT, system: str | None = None, home: Path | None = None, env: dict | None = None,
            vendor_dirs: dict[str, Path] | None = None, log=None) -> list[InstallResult]:
    """Install into every Krita found (or ``krita_dirs``); callable from Python (tests, the lead's
    real-Krita test).  ``system``/``home``/``env`` default to this machine's."""
    log = log or (lambda m: print(m, file=sys.stderr))
    system = system or platform.system()
    home = Path(home) if home else Path.home()
    engine_python = Path(engine_python) if engine_python else default_engine_python()
    files = file_map(Path(source or DEFAULT_SOURCE), engine_root, vendor_dirs, engine_python)
    record = engine_record(engine_python, engine_root)
    chosen = []
    for d in krita_dirs or [None]:
        chosen += targets(system, home, env, d)
    results = [install_into(t, files, record, log=log) for t in chosen]
    if krita_running():
        log("note: Krita is running: restart it to load the plugin. If Krita rewrites kritarc when it quits and "
            "the plugin stays disabled, run `python -m installer plugin` again with Krita closed.")
    return results


def uninstall(krita_dirs: list[Path] | None = None, *, system: str | None = None, home: Path | None = None,
              env: dict | None = None, log=None) -> list[InstallResult]:
    log = log or (lambda m: print(m, file=sys.stderr))
    system = system or platform.system()
    home = Path(home) if home else Path.home()
    if krita_dirs:
        chosen = [t for d in krita_dirs for t in targets(system, home, env, d)]
    else:
        from .krita_paths import candidates

        chosen = candidates(system, home, env)
    results = []
    for t in chosen:
        manifest = read_manifest(t)
        if manifest is None:
            if (t.pykrita / PLUGIN_ID).exists():
                log(f"{t.resource_dir}: {PLUGIN_ID} is there but has no install manifest (not installed by "
                    f"this installer): left alone")
            continue
        r = InstallResult(t)
        for rel in manifest.get("files", []):
            p = t.resource_dir / rel
            if p.is_file() or p.is_symlink():
                p.unlink()
                r.removed.append(rel)
        _manifest_path(t).unlink(missing_ok=True)
        _prune_empty(t, manifest.get("files", []))
        pkg = t.pykrita / PLUGIN_ID
        if pkg.is_dir() and not any(pkg.iterdir()):
            pkg.rmdir()
        for created in sorted(manifest.get("created_dirs", []), key=lambda s: len(Path(s).parts), reverse=True):
            d = Path(created)
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        kritarc.write_key(t.kritarc, ENABLE_KEY, "false")
        log(f"{t.name} Krita ({t.resource_dir}): {len(r.removed)} files removed; disabled in {t.kritarc}")
        results.append(r)
    return results


@dataclass
class PluginState:
    target: KritaTarget
    installed: bool          # a manifest exists
    missing_files: list[str]
    enabled: bool            # kritarc says enable_diffusion_dock=true
    engine_python: str | None
    engine_python_ok: bool

    @property
    def ok(self) -> bool:
        return self.installed and not self.missing_files and self.enabled and self.engine_python_ok


def state(t: KritaTarget) -> PluginState:
    m = read_manifest(t)
    missing = [rel for rel in (m or {}).get("files", []) if not (t.resource_dir / rel).exists()]
    enabled = (kritarc.read_key(t.kritarc, ENABLE_KEY) or "").lower() == "true"
    py = None
    try:
        py = json.loads((t.pykrita / PLUGIN_ID / ENGINE_JSON).read_text()).get("python")
    except (OSError, ValueError):
        pass
    return PluginState(t, m is not None, missing, enabled, py, bool(py) and Path(py).exists())

