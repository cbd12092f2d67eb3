"""Where Krita keeps its resources (pykrita/, actions/) and its settings file (kritarc), per platform.

Pure functions of (platform, home, environment), so every platform is tested anywhere.  Locations as
Krita documents them (QStandardPaths AppDataLocation / GenericConfigLocation):
- Linux: ``~/.local/share/krita`` and ``~/.config/kritarc`` (XDG_DATA_HOME / XDG_CONFIG_HOME honoured);
  Flatpak: ``~/.var/app/org.kde.krita/data/krita`` and ``~/.var/app/org.kde.krita/config/kritarc``;
- Windows: ``%APPDATA%\\krita`` and ``%LOCALAPPDATA%\\kritarc``; the Microsoft Store build keeps both
  under ``%LOCALAPPDATA%\\Packages\\49800Krita_*\\LocalCache\\`` (``Roaming\\krita``, ``Local\\kritarc``);
- macOS: ``~/Library/Application Support/krita`` and ``~/Library/Preferences/kritarc``.

Krita 6 (Qt 6) uses the same folders as Krita 5 where it could be checked: Krita 6.0.2.1 on Arch
loads plugins from ``~/.local/share/krita/pykrita`` and the Krita 6 Flatpak from
``~/.var/app/org.kde.krita/data/krita/pykrita`` (tracebacks in public bug reports, 2026).  Krita 6's
own path code (KoResourcePaths, 6.x branch) could not be read on the machine this was written on, so
Windows and macOS are assumed unchanged: one installation serves a Krita 5 and a Krita 6 sharing a
resource folder, which is why the plugin picks its Qt binding at run time (runtime/qt.py).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath

FLATPAK_ID = "org.kde.krita"


@dataclass(frozen=True)
class KritaTarget:
    name: str           # "Linux", "Flatpak", "Windows", "Windows Store", "macOS", "custom"
    resource_dir: Path  # holds pykrita/ and actions/
    kritarc: Path
    marker: Path | None = None  # a path whose existence shows this Krita has been installed/run

    @property
    def pykrita(self) -> Path:
        return self.resource_dir / "pykrita"

    @property
    def actions(self) -> Path:
        return self.resource_dir / "actions"

    def exists(self) -> bool:
        return any(isinstance(p, Path) and p.exists() for p in (self.resource_dir, self.kritarc, self.marker))


def candidates(system: str, home: str | os.PathLike, env: dict | None = None) -> list[KritaTarget]:
    """Every place a Krita of this platform may use, native first."""
    env = os.environ if env is None else env
    home_s = str(home)
    if system == "Windows":
        P = Path if os.name == "nt" else PureWindowsPath  # other platforms' paths stay pure (tests)
        appdata = env.get("APPDATA") or str(PureWindowsPath(home_s, "AppData", "Roaming"))
        local = env.get("LOCALAPPDATA") or str(PureWindowsPath(home_s, "AppData", "Local"))
        out = [KritaTarget("Windows", P(appdata, "krita"), P(local, "kritarc"))]
        for pkg in sorted(glob.glob(str(PureWindowsPath(local, "Packages", "49800Krita_*")))):
            cache = P(pkg, "LocalCache")
            out.append(KritaTarget("Windows Store", cache / "Roaming" / "krita", cache / "Local" / "kritarc", P(pkg)))
        return out
    P = Path if os.name != "nt" else PurePosixPath
    if system == "Darwin":
        lib = P(home_s, "Library")
        return [KritaTarget("macOS", lib / "Application Support" / "krita", lib / "Preferences" / "kritarc")]
    data = env.get("XDG_DATA_HOME") or str(PurePosixPath(home_s, ".local", "share"))
    config = env.get("XDG_CONFIG_HOME") or str(PurePosixPath(home_s, ".config"))
    flat = P(home_s, ".var", "app", FLATPAK_ID)
    return [KritaTarget("Linux", P(data, "krita"), P(config, "kritarc")),
            KritaTarget("Flatpak", flat / "data" / "krita", flat / "config" / "kritarc", flat)]


def targets(system: str, home, env: dict | None = None, krita_dir: Path | None = None) -> list[KritaTarget]:
    """Where to install: ``krita_dir`` alone when given, else every Krita found, else the native default
    (a fresh account where Krita has not run yet)."""
    cands = candidates(system, home, env)
    if krita_dir is not None:
        return [target_for_dir(Path(krita_dir), cands)]
    found = [c for c in cands if c.exists()]
    return found or cands[:1]


def target_for_dir(krita_dir: Path, cands: list[KritaTarget]) -> KritaTarget:
    """The target of an explicit resource folder, with the kritarc of the Krita it belongs to."""
    norm = _norm(krita_dir)
    for c in cands:
        if _norm(c.resource_dir) == norm:
            return c
    for c in cands:  # a folder inside a known Krita's tree (e.g. the Flatpak's data dir moved)
        if c.marker is not None and norm.startswith(_norm(c.marker)):
            return KritaTarget("custom", krita_dir, c.kritarc, c.marker)
    return KritaTarget("custom", krita_dir, cands[0].kritarc)


def _norm(p: PurePath | str) -> str:
    return os.path.normcase(os.path.normpath(str(p)))
