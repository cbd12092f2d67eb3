"""The release zip: what Krita 5.1's own "Import Python Plugin from File" finds in it, what it copies,
and the real Krita loading the plugin from there."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from core import __version__
from installer import package, plugin_install

from .conftest import ROOT, require

KRITA_IMPORTER = Path("/usr/share/krita/pykrita/plugin_importer/plugin_importer.py")


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "installer", "package", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip())
    assert path == out / f"diffusion_dock-{__version__}.zip"
    return path


def krita_importer():
    """Krita's own importer module, from the installed Krita (pure Python; ``i18n`` is Krita's builtin)."""
    require(KRITA_IMPORTER.is_file(), "Krita is not installed (apt-get install krita)")
    spec = importlib.util.spec_from_file_location("krita_plugin_importer", KRITA_IMPORTER)
    module = importlib.util.module_from_spec(spec)
    module.i18n = str
    spec.loader.exec_module(module)
    return module


def zip_import(release: Path):
    """What the artist does with the zip, for ``run_gui_scenario``'s ``install``: into a fresh HOME, Krita's
    importer puts the zip's plugin in place and enables it as its dialog does (``python`` /
    ``enable_diffusion_dock=true``); returns the pykrita folder."""
    from installer import kritarc

    importer = krita_importer()

    def install(home: Path) -> Path:
        resources = home / ".local" / "share" / "krita"
        resources.mkdir(parents=True)
        importer.PluginImporter(str(release), str(resources), lambda p: True).import_all()
        kritarc.write_key(home / ".config" / "kritarc", "enable_diffusion_dock", "true")
        return resources / "pykrita"

    return install


def test_the_zip_holds_the_plugin_its_engine_and_a_stamp(release):
    z = zipfile.ZipFile(release)
    names = set(z.namelist())
    assert {"diffusion_dock.desktop", "diffusion_dock.action", "diffusion_dock/", "diffusion_dock/__init__.py",
            "diffusion_dock/_core/contract/jobs.py", "diffusion_dock/vendor/qasync/__init__.py",
            "diffusion_dock/vendor/platformdirs/__init__.py", "diffusion_dock/_engine/core/engine/service.py",
            "diffusion_dock/_engine/installer/cli.py", "diffusion_dock/_engine/pyproject.toml"} <= names
    assert not [n for n in names if "/editor/" in n and "_engine" not in n]        # no standalone editor
    assert not [n for n in names if n.endswith((".pyc", ".pyo")) or "__pycache__" in n]
    stamp = json.loads(z.read("diffusion_dock/version.json"))
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert stamp["version"] == __version__ and stamp["commit"].split("+")[0] == commit
    # the same plugin files as `python -m installer plugin` installs
    installed = {d[len("pykrita/"):]: s for d, s in plugin_install.file_map(plugin_install.DEFAULT_SOURCE).items()
                 if d.startswith("pykrita/")}
    for name, src in installed.items():
        assert z.read(name) == src.read_bytes(), name
    assert z.read("diffusion_dock/_engine/core/contract/modes.py") == (ROOT / "core/contract/modes.py").read_bytes()


def test_a_second_build_of_the_same_sources_differs_only_in_its_stamp(release, tmp_path):
    again = package.build(tmp_path)
    a, b = zipfile.ZipFile(release), zipfile.ZipFile(again)
    assert a.namelist() == b.namelist()
    for name in a.namelist():
        if name != "diffusion_dock/version.json":
            assert a.read(name) == b.read(name), name


def test_krita_5_1s_own_importer_finds_and_copies_everything(release, tmp_path):
    importer = krita_importer()
    resources = tmp_path / "krita"
    resources.mkdir()
    [plugin] = importer.PluginImporter(str(release), str(resources), lambda p: True).import_all()
    assert (plugin["name"], plugin["ui_name"], plugin["action"]) == ("diffusion_dock", "Diffusion Dock",
                                                                     "diffusion_dock.action")
    pkg = resources / "pykrita" / "diffusion_dock"
    assert (resources / "pykrita" / "diffusion_dock.desktop").is_file()
    assert (resources / "actions" / "diffusion_dock.action").read_bytes() == \
        (ROOT / "plugin" / "diffusion_dock.action").read_bytes()
    assert (pkg / "_engine" / "core" / "__main__.py").is_file() and (pkg / "_core" / "link" / "protocol.py").is_file()
    # the imported package works in the installed form: relative _core and vendor, no generic names
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from diffusion_dock.runtime import coreapi\n"
            "print(coreapi.INSTALLED, coreapi.core.__name__, coreapi.paths.results_dir().name)\n"
            "print(sorted(m for m in ('core', 'qasync', 'platformdirs', 'plugin') if m in sys.modules))\n"
            % str(resources / "pykrita"))
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60,
                         env={"QT_QPA_PLATFORM": "offscreen", "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["True diffusion_dock._core results", "[]"]


@pytest.mark.krita(gui=True)
@pytest.mark.slow
def test_real_krita_loads_the_plugin_imported_from_the_zip(release, tmp_path):
    """A fresh HOME: Krita's importer puts the zip's plugin in place and enables it as its dialog does
    (``python`` / ``enable_diffusion_dock=true``); Krita starts with the docker, actions and menus."""

    from .plugin.krita_gui import run_gui_scenario

    import_zip = zip_import(release)

    results, _, proc = run_gui_scenario(tmp_path / "home", install=import_zip, DD_DRIVER_REGISTRATION_ONLY="1",
                                        timeout=240)
    assert "crash" not in results, results["crash"] + proc.stderr[-3000:]
    assert results["plugin_loaded"] and results["registered"] and results["dock_found"]
    assert results["dock_panel"] == "DockPanel" and "diffusion_dock" in results["dockers"]
    assert results["package_file"].startswith(str(tmp_path / "home" / ".local" / "share" / "krita" / "pykrita"))
    assert all(results["actions"][a] is not None for a in results["actions"])


@pytest.mark.krita(gui=True)
@pytest.mark.slow
def test_first_run_from_the_zip_setup_then_a_tiny_inpaint_with_a_lora(release, tmp_path, tiny_root):
    """From the zip alone on a fresh HOME, in the real Krita under Xvfb: Krita's importer, the dock shows its
    setup page by itself (no engine), Install runs the installer (the zip's own ``_engine/``, with the
    computer's python3) against the fake hub; the engine environment is a stand-in whose Python is this
    test environment's (torch and the packages already there: those three steps report "already done";
    no wheel folder is used), so the models, plugin-record and doctor steps run for real.  Then the engine
    starts from ``engine.json`` the setup wrote, and an inpaint of a selection with the chosen model and a
    LoRA from the models folder becomes a new layer."""
    import time

    from core.devtools import tiny_adapters as T

    from .plugin.krita_gui import run_gui_scenario
    from .test_installer_setup import make_ready_venv, tiny_hub

    import_zip = zip_import(release)
    venv = make_ready_venv(tmp_path)
    models = tmp_path / "models"
    T.save(T.lora_state(tiny_root / "sd2-inpainting", seed=1), models / "loras" / "tiny-lora.safetensors")
    hub, handle = tiny_hub(tiny_root)

    t0 = time.monotonic()
    try:
        results, _, proc = run_gui_scenario(
            tmp_path / "home", install=import_zip, timeout=600, DD_DRIVER_SETUP="1", DD_DRIVER_TIMEOUT_MS="560000",
            DD_TEST_VENV=venv, DD_MODELS_DIR=models, HF_HUB_CACHE=tmp_path / "hf", HF_ENDPOINT=handle.url,
            HF_HUB_OFFLINE="0", NO_PROXY="127.0.0.1,localhost")
    finally:
        handle.stop()
    seconds = time.monotonic() - t0
    assert "crash" not in results, results["crash"] + proc.stderr[-3000:]
    assert results["setup_page_shown"] and results["engine_status_code"] == "engine_not_found"
    assert results["setup_exit"] == 0, (results.get("setup_errors"), results.get("setup_log"))
    assert results["setup_steps"] == {"environment": "already done", "torch": "already done",
                                      "packages": "already done", "models": "done", "plugin": "done",
                                      "check": "done"}
    assert results["setup_files"] and all("MB" in t for t in results["setup_files"].values())
    pkg = tmp_path / "home" / ".local" / "share" / "krita" / "pykrita" / "diffusion_dock"
    assert json.loads((pkg / "engine.json").read_text())["engine_root"] == str(pkg / "_engine")
    assert results["back_to_form"] and "sd2-inpainting" in results["models_offered"]
    assert results["loras_offered"] == ["tiny-lora.safetensors"]
    assert results["job_state"] == "done", (results.get("job_message"), results.get("generate_message"))
    assert results["job_provenance"]["model"] == "sd2-inpainting"
    assert [tuple(x) for x in results["job_provenance"]["loras"]] == [("tiny-lora.safetensors", 0.8)]
    assert results["layers_after_apply"][0].startswith("[Inpaint] red scarf") and len(results["layers_after_apply"]) == 2
    print(f"\nfirst run from the zip: setup {results['setup_seconds']} s, largest stall during setup "
          f"{results['setup_stall_ms']} ms; import to first result {seconds:.0f} s "
          f"(in Krita: {results['driver_seconds_to_result']} s)")
