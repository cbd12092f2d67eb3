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
def test_first_run_from_the_zip_setup_then_a_tiny_inpaint_with_a_lora(release, tmp_path, tiny_root, monkeypatch):
    """From the zip alone on a fresh HOME, in the real Krita under Xvfb: Krita's importer, the dock shows its
    setup page by itself (no engine), the Wheel folder field is filled, Install runs the installer (the zip's
    own ``_engine/``, with the computer's python3) against the fake hub, offline for pip (its configuration
    switched off, every proxy refusing): the environment is created, torch (this machine's CPU wheel) and
    the engine's requirements (wheels repacked from this test environment) are installed by pip from the
    folder with ``--no-index``; only ``wheel_folder.NOT_REPACKED`` are links beside it.  The models, plugin-record and
    doctor steps run for real.  Then the engine starts from ``engine.json`` the setup wrote, and an inpaint
    of a selection with the chosen model and a LoRA from the models folder becomes a new layer."""
    import os
    import time

    from core.devtools import tiny_adapters as T
    from installer import engine_venv
    from installer.torch_choice import choose_torch, probe_host

    from .plugin.krita_gui import run_gui_scenario
    from .test_installer_setup import tiny_hub
    from .wheel_folder import engine_wheel_folder, layered_venv, offline_pip_env, torch_wheel_on_disk

    choice = choose_torch(probe_host())
    require(choice.backend == "cpu" and choice.requirement.startswith("torch=="),
            f"the setup would choose {choice.describe()} here, not the CPU torch this test installs")
    t_build = time.monotonic()
    require(torch_wheel_on_disk() is not None, "no torch wheel of this environment's version where pip's "
                                               "find-links point")
    wheels, layer, names = engine_wheel_folder(tmp_path)
    build_seconds = time.monotonic() - t_build
    venv = tmp_path / "engine-venv"
    site = layered_venv(venv, layer)
    assert not engine_venv.venv_python(venv).exists()
    for key in [k for k in os.environ if k.upper().startswith("PIP_") or "PROXY" in k.upper()]:
        monkeypatch.delenv(key)
    offline = {k: v for k, v in offline_pip_env({}).items()}
    import_zip = zip_import(release)
    models = tmp_path / "models"
    T.save(T.lora_state(tiny_root / "sd2-inpainting", seed=1), models / "loras" / "tiny-lora.safetensors")
    hub, handle = tiny_hub(tiny_root)

    t0 = time.monotonic()
    try:
        results, _, proc = run_gui_scenario(
            tmp_path / "home", install=import_zip, timeout=900, DD_DRIVER_SETUP="1", DD_DRIVER_TIMEOUT_MS="860000",
            DD_TEST_VENV=venv, DD_TEST_WHEELS=wheels, DD_MODELS_DIR=models, HF_HUB_CACHE=tmp_path / "hf",
            HF_ENDPOINT=handle.url, HF_HUB_OFFLINE="0", **offline)
    finally:
        handle.stop()
    seconds = time.monotonic() - t0
    assert "crash" not in results, results["crash"] + proc.stderr[-3000:]
    assert results["setup_page_shown"] and results["engine_status_code"] == "engine_not_found"
    assert "from the wheel folder" in results["setup_plan"]["torch"], results["setup_plan"]
    assert results["setup_exit"] == 0, (results.get("setup_errors"), results.get("setup_log"))
    assert results["setup_steps"] == {"environment": "done", "torch": "done", "packages": "done",
                                      "models": "done", "plugin": "done", "check": "done"}
    pips = [c for c in results["setup_commands"] if " -m pip install " in c]
    assert len(pips) == 2 and all(f"--no-index --find-links {wheels}" in c for c in pips), pips
    # what pip put into the new environment: torch and the repacked requirements, from the folder
    py = engine_venv.venv_python(venv)
    where = subprocess.run([str(py), "-c", "import torch, diffusers, transformers, huggingface_hub, peft, qasync, numpy; "
                            "print('\\n'.join(m.__file__ for m in (torch, diffusers, transformers, huggingface_hub, "
                            "peft, qasync, numpy)))"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert where.returncode == 0, where.stderr
    *installed, numpy_file = where.stdout.split()
    assert all(f.startswith(str(site)) for f in installed) and numpy_file.startswith(str(layer)), where.stdout
    assert results["setup_files"] and all("MB" in t for t in results["setup_files"].values())
    pkg = tmp_path / "home" / ".local" / "share" / "krita" / "pykrita" / "diffusion_dock"
    record = json.loads((pkg / "engine.json").read_text())
    assert record["engine_root"] == str(pkg / "_engine") and record["python"] == str(py)
    assert record["venv"] == str(venv) and record["wheels"] == str(wheels)     # Repair starts from them
    assert results["back_to_form"] and "sd2-inpainting" in results["models_offered"]
    assert results["loras_offered"] == ["tiny-lora.safetensors"]
    assert results["job_state"] == "done", (results.get("job_message"), results.get("generate_message"))
    assert results["job_provenance"]["model"] == "sd2-inpainting"
    assert [tuple(x) for x in results["job_provenance"]["loras"]] == [("tiny-lora.safetensors", 0.8)]
    assert results["layers_after_apply"][0].startswith("[Inpaint] red scarf") and len(results["layers_after_apply"]) == 2
    print(f"\nfirst run from the zip: wheel folder of {len(names)} wheels built in {build_seconds:.0f} s; setup "
          f"{results['setup_seconds']} s ({results['setup_step_seconds']}), largest stall during setup "
          f"{results['setup_stall_ms']} ms (handlers {results['setup_handler_ms']}); import to first result "
          f"{seconds:.0f} s (in Krita: {results['driver_seconds_to_result']} s)")
