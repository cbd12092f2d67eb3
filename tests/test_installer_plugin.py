"""``plugin`` / ``uninstall`` file mechanics against a small fake plugin tree, in a fresh HOME."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core import PURE_PACKAGES
from installer import kritarc, plugin_install
from installer.krita_paths import candidates, targets

from .conftest import ROOT
from .plugin.krita_support import clean_env

DESKTOP = """[Desktop Entry]
Type=Service
ServiceTypes=Krita/PythonPlugin
X-KDE-Library=diffusion_dock
X-Python-2-Compatible=false
Name=Diffusion Dock
Comment=Stable Diffusion 2 in a dock
"""
ACTION = """<?xml version="1.0" encoding="UTF-8"?>
<ActionCollection version="2" name="Scripts"><Actions category="Scripts"><text>Diffusion Dock</text>
<Action name="diffusion_dock_inpaint"><text>Inpaint selection</text><shortcut>ctrl+alt+shift+i</shortcut>
<activationFlags>10000</activationFlags><activationConditions>0</activationConditions></Action>
</Actions></ActionCollection>
"""


@pytest.fixture
def source(tmp_path) -> Path:
    """plugin/ with the .desktop, the package (a cache and an editor subpackage to leave out) and the .action."""
    src = tmp_path / "plugin"
    pkg = src / "diffusion_dock"
    (pkg / "__pycache__").mkdir(parents=True)
    (pkg / "editor").mkdir()
    (pkg / "widgets").mkdir()
    (src / "diffusion_dock.desktop").write_text(DESKTOP)
    (src / "diffusion_dock.action").write_text(ACTION)
    (pkg / "__init__.py").write_text("from ._core.contract import jobs  # noqa\n")
    (pkg / "dock.py").write_text("DOCK = 1\n")
    (pkg / "widgets" / "__init__.py").write_text("")
    (pkg / "widgets" / "prompt.py").write_text("PROMPT = 1\n")
    (pkg / "__pycache__" / "dock.cpython-311.pyc").write_bytes(b"\0cache")
    (pkg / "editor" / "__init__.py").write_text("import PyQt6  # the standalone editor: not for Krita\n")
    (pkg / "stale.pyc").write_bytes(b"\0")
    return src


@pytest.fixture
def home(tmp_path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


def resource(home: Path) -> Path:
    return home / ".local" / "share" / "krita"


def do_install(source, home, **kw):
    kw.setdefault("engine_python", Path(sys.executable))
    return plugin_install.install(source, system="Linux", home=home, env={}, log=lambda m: None, **kw)


def test_install_into_a_fresh_home(source, home):
    [res] = do_install(source, home)
    krita = resource(home)
    assert res.resource_dir == krita
    pkg = krita / "pykrita" / "diffusion_dock"
    assert (krita / "pykrita" / "diffusion_dock.desktop").read_text() == DESKTOP
    assert (krita / "actions" / "diffusion_dock.action").read_text() == ACTION
    assert (pkg / "dock.py").read_text() == "DOCK = 1\n" and (pkg / "widgets" / "prompt.py").is_file()
    assert not (pkg / "__pycache__").exists() and not (pkg / "stale.pyc").exists()
    assert not (pkg / "editor").exists()
    # qasync, copied from the installed package, with its licence.
    qsrc = Path(importlib.util.find_spec("qasync").origin).parent
    assert (pkg / "vendor" / "qasync" / "__init__.py").read_bytes() == (qsrc / "__init__.py").read_bytes()
    assert (pkg / "vendor" / "qasync" / "LICENSE").is_file() and (pkg / "vendor" / "__init__.py").is_file()
    assert not list((pkg / "vendor").rglob("*.pyc"))
    # The engine's pure packages, whole, and nothing else of the engine.
    assert (pkg / "_core" / "__init__.py").read_bytes() == (ROOT / "core" / "__init__.py").read_bytes()
    for name in PURE_PACKAGES:
        sources = sorted(p.relative_to(ROOT / "core") for p in (ROOT / "core" / name).rglob("*.py"))
        assert sources and sorted(p.relative_to(pkg / "_core") for p in (pkg / "_core" / name).rglob("*.py")) == sources
        for rel in sources:
            assert (pkg / "_core" / rel).read_bytes() == (ROOT / "core" / rel).read_bytes()
    assert sorted(p.name for p in (pkg / "_core").iterdir()) == sorted(["__init__.py", *PURE_PACKAGES])
    rec = json.loads((pkg / "engine.json").read_text())
    assert rec["python"] == str(Path(sys.executable).absolute()) and rec["engine_root"] == str(ROOT)
    assert kritarc.read_key(home / ".config" / "kritarc", "enable_diffusion_dock") == "true"
    assert (home / ".config" / "kritarc").read_text() == "[python]\nenable_diffusion_dock=true\n"


def test_installed_core_imports_with_the_standard_library_only(source, home):
    do_install(source, home)
    pykrita = resource(home) / "pykrita"
    code = ("import sys; sys.path.insert(0, %r)\n"
            "import diffusion_dock\n"
            "import pkgutil, importlib, diffusion_dock._core as c\n"
            "for p in %r:\n"
            "    pkg = importlib.import_module('diffusion_dock._core.' + p)\n"
            "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'): importlib.import_module(m.name)\n"
            "bad = [m for m in ('numpy', 'torch', 'core') if m in sys.modules]\n"
            "assert not bad, bad\nprint('ok')\n") % (str(pykrita), PURE_PACKAGES)
    out = subprocess.run([sys.executable, "-S", "-E", "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_reinstall_is_idempotent_and_removes_stale_files(source, home):
    do_install(source, home)
    krita = resource(home)
    snapshot = {p: p.stat().st_mtime_ns for p in krita.rglob("*") if p.is_file()}
    rc = (home / ".config" / "kritarc").read_text()
    [again] = do_install(source, home)
    assert again.copied == [] and again.removed == [] and len(again.unchanged) == len(snapshot) - 1  # + manifest
    assert {p: p.stat().st_mtime_ns for p in krita.rglob("*") if p.is_file()} == snapshot
    assert (home / ".config" / "kritarc").read_text() == rc
    # A file the new version no longer ships disappears; its empty folder too.
    (source / "diffusion_dock" / "widgets" / "prompt.py").unlink()
    (source / "diffusion_dock" / "widgets" / "__init__.py").unlink()
    (source / "diffusion_dock" / "widgets").rmdir()
    [third] = do_install(source, home)
    assert sorted(third.removed) == ["pykrita/diffusion_dock/widgets/__init__.py",
                                     "pykrita/diffusion_dock/widgets/prompt.py"]
    assert not (krita / "pykrita" / "diffusion_dock" / "widgets").exists()


def test_kritarc_edit_keeps_everything_else(source, home):
    rc = home / ".config" / "kritarc"
    rc.parent.mkdir(parents=True)
    original = ("[General]\nLocale=de_DE\nwindowState[$e]=AdBy\n\n[python]\nenable_other_plugin=true\n"
                "enable_diffusion_dock=false\n\n[theme]\nTheme=Krita dark\n")
    rc.write_text(original)
    [res] = do_install(source, home)
    assert res.kritarc_previous == "false"
    assert rc.read_text() == original.replace("enable_diffusion_dock=false", "enable_diffusion_dock=true")
    rc.write_text("[General]\r\nA=1\r\n[python]\r\nenable_x=true\r\n[Other]\r\nB=2\r\n")
    kritarc.write_key(rc, "enable_diffusion_dock", "true")
    assert rc.read_bytes() == b"[General]\r\nA=1\r\n[python]\r\nenable_x=true\r\nenable_diffusion_dock=true\r\n[Other]\r\nB=2\r\n"


def test_uninstall_removes_exactly_what_was_installed(source, home):
    rc = home / ".config" / "kritarc"
    rc.parent.mkdir(parents=True)
    rc.write_text("[General]\nA=1\n")
    actions = resource(home) / "actions"
    actions.mkdir(parents=True)
    (actions / "someone_else.action").write_text("<x/>")
    do_install(source, home)
    mine = resource(home) / "pykrita" / "diffusion_dock" / "my_notes.txt"
    mine.write_text("the user's own file")
    [res] = plugin_install.uninstall(system="Linux", home=home, env={}, log=lambda m: None)
    left = sorted(p.relative_to(home).as_posix() for p in home.rglob("*") if p.is_file())
    assert left == [".config/kritarc", ".local/share/krita/actions/someone_else.action",
                    ".local/share/krita/pykrita/diffusion_dock/my_notes.txt"]
    assert rc.read_text() == "[General]\nA=1\n\n[python]\nenable_diffusion_dock=false\n"
    assert "pykrita/diffusion_dock.desktop" in res.removed
    mine.unlink()
    do_install(source, home)
    plugin_install.uninstall(system="Linux", home=home, env={}, log=lambda m: None)
    # Folders the install created are gone; the ones that were there before it (pykrita/, kept by the
    # user's file at the first uninstall) stay.
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*")) == [
        ".config", ".config/kritarc", ".local", ".local/share", ".local/share/krita", ".local/share/krita/actions",
        ".local/share/krita/actions/someone_else.action", ".local/share/krita/pykrita"]


def test_every_krita_found_gets_the_plugin_with_its_own_kritarc(source, home):
    (home / ".var" / "app" / "org.kde.krita" / "config").mkdir(parents=True)
    resource(home).mkdir(parents=True)
    results = do_install(source, home)
    assert [r.target.name for r in results] == ["Linux", "Flatpak"]
    flat = home / ".var" / "app" / "org.kde.krita"
    assert (flat / "data" / "krita" / "pykrita" / "diffusion_dock.desktop").is_file()
    assert kritarc.read_key(flat / "config" / "kritarc", "enable_diffusion_dock") == "true"
    assert kritarc.read_key(home / ".config" / "kritarc", "enable_diffusion_dock") == "true"
    # Only the Flatpak one when asked.
    [one] = do_install(source, home, krita_dirs=[flat / "data" / "krita"])
    assert one.target.name == "Flatpak"


def test_state_reports_missing_files_and_disabled_kritarc(source, home):
    [res] = do_install(source, home)
    s = plugin_install.state(res.target)
    assert s.ok and s.enabled and s.engine_python_ok
    (res.resource_dir / "actions" / "diffusion_dock.action").unlink()
    kritarc.write_key(res.target.kritarc, "enable_diffusion_dock", "false")
    s = plugin_install.state(res.target)
    assert not s.ok and s.missing_files == ["actions/diffusion_dock.action"] and not s.enabled


def test_a_wrong_desktop_file_is_refused(source, home):
    (source / "diffusion_dock.desktop").write_text(DESKTOP.replace("X-KDE-Library=diffusion_dock",
                                                                   "X-KDE-Library=diffusiondock"))
    with pytest.raises(plugin_install.PluginInstallError, match="X-KDE-Library"):
        do_install(source, home)
    assert not (home / ".local").exists()


def test_resource_and_kritarc_locations_per_platform(tmp_path):
    linux = candidates("Linux", "/home/ann", {})
    assert [(str(c.resource_dir), str(c.kritarc)) for c in linux] == [
        ("/home/ann/.local/share/krita", "/home/ann/.config/kritarc"),
        ("/home/ann/.var/app/org.kde.krita/data/krita", "/home/ann/.var/app/org.kde.krita/config/kritarc")]
    xdg = candidates("Linux", "/home/ann", {"XDG_DATA_HOME": "/d", "XDG_CONFIG_HOME": "/c"})[0]
    assert (str(xdg.resource_dir), str(xdg.kritarc)) == ("/d/krita", "/c/kritarc")
    mac = candidates("Darwin", "/Users/ann", {})[0]
    assert str(mac.resource_dir) == "/Users/ann/Library/Application Support/krita"
    assert str(mac.kritarc) == "/Users/ann/Library/Preferences/kritarc"
    win = candidates("Windows", r"C:\Users\ann", {"APPDATA": r"C:\Users\ann\AppData\Roaming",
                                                   "LOCALAPPDATA": r"C:\Users\ann\AppData\Local"})[0]
    assert str(win.resource_dir) == r"C:\Users\ann\AppData\Roaming\krita"
    assert str(win.kritarc) == r"C:\Users\ann\AppData\Local\kritarc"
    # Nothing installed yet: the native place; an explicit folder keeps the native kritarc.
    assert [t.name for t in targets("Linux", tmp_path, {})] == ["Linux"]
    [custom] = targets("Linux", tmp_path, {}, tmp_path / "elsewhere")
    assert custom.resource_dir == tmp_path / "elsewhere" and custom.kritarc == tmp_path / ".config" / "kritarc"


def test_cli_plugin_and_uninstall(source, home):
    env = dict(os.environ, HOME=str(home))
    env.pop("XDG_DATA_HOME", None)
    env.pop("XDG_CONFIG_HOME", None)
    out = subprocess.run([sys.executable, "-m", "installer", "plugin", "--source", str(source)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(resource(home))
    assert (resource(home) / "pykrita" / "diffusion_dock" / "engine.json").is_file()
    out = subprocess.run([sys.executable, "-m", "installer", "uninstall"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert not (resource(home) / "pykrita").exists()


REAL_PLUGIN_INIT = '''\
import json, os
from ._core.contract import jobs, plan  # noqa: F401 - the engine's pure packages, as the installer laid them out
from .vendor import qasync  # noqa: F401 - vendored by the installer
here = os.path.dirname(__file__)
engine = json.load(open(os.path.join(here, "engine.json")))
with open(os.path.join(os.path.expanduser("~"), "plugin-loaded.txt"), "w") as f:
    f.write("%s %s\\n" % (jobs.JobRequest.__name__, engine["python"]))
os._exit(0)  # the test only needs to know that Krita loaded the plugin
'''


@pytest.mark.krita(gui=True)
@pytest.mark.slow
def test_real_krita_loads_what_the_installer_put_in_a_fresh_home(source, home):
    """Krita 5 from apt, under Xvfb, with HOME pointing at a fresh folder: `python -m installer plugin`
    output is found, enabled, imported (with _core, vendored qasync and engine.json)."""
    (source / "diffusion_dock" / "__init__.py").write_text(REAL_PLUGIN_INIT)
    env = dict(os.environ, HOME=str(home))
    for k in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "QT_QPA_PLATFORM"):
        env.pop(k, None)
    krita_env = clean_env(home)
    for k in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "QT_QPA_PLATFORM"):
        krita_env.pop(k, None)
    out = subprocess.run([sys.executable, "-m", "installer", "plugin", "--source", str(source)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    try:
        subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1280x800x24", "krita", "--nosplash"], env=krita_env, cwd=home,
                       capture_output=True, timeout=240)
    except subprocess.TimeoutExpired:
        pass
    marker = home / "plugin-loaded.txt"
    assert marker.is_file(), "Krita did not load the installed plugin"
    assert marker.read_text().split() == ["JobRequest", str(Path(sys.executable).absolute())]
