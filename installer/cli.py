"""``python -m installer``: engine environment, models, the Krita plugin, doctor.

Only the standard library is imported here: ``engine`` runs with any Python 3.10+ before the engine's
environment exists.  Commands that need the engine's packages (huggingface_hub, torch) start themselves
again inside that environment when the current Python lacks them.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_MODEL = 0, 1, 2, 3
DEFAULT_MODEL = "sd2-inpainting"   # the main job's model


class InstallerError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.code = code


def say(msg: str = "") -> None:
    print(msg, file=sys.stderr, flush=True)


# --- engine -------------------------------------------------------------------------------------------

def cmd_engine(args) -> int:
    from . import engine_venv
    from .torch_choice import UnsupportedHost, choose_torch, probe_host

    engine_venv.check_python()
    facts = probe_host()
    try:
        choice = choose_torch(facts, args.torch, args.torch_index)
    except (UnsupportedHost, ValueError) as e:
        raise InstallerError(str(e), EXIT_USAGE) from None
    venv = Path(args.venv).expanduser() if args.venv else engine_venv.default_venv()
    wheels = _wheels_arg(args.wheels)
    python = engine_venv.venv_python(venv)
    found = engine_venv.installed_torch(python) if python.exists() else None
    plan = engine_venv.plan(choice, venv, base_python=args.python, found_torch=found,
                            editable=not args.no_editable, wheels=wheels)
    say(f"hardware: {facts.system} {facts.machine}" + (f", GPU {', '.join(facts.gpus)}" if facts.gpus else "")
        + (f", NVIDIA driver CUDA {'.'.join(map(str, facts.cuda_driver))}" if facts.cuda_driver else ""))
    say(f"torch: {engine_venv.describe(choice, wheels)}")
    for note in choice.notes:
        if wheels is None or "--torch-index" not in note:      # with a wheel folder no index is used
            say(f"note: {note}")
    for s in plan.skipped:
        say(f"skip: {s}")
    if args.dry_run:
        print(f"# constraints file {plan.constraints}: {plan.constraint_text.strip()}")
        for cmd in plan.commands:
            print(engine_venv.format_command(cmd))
        return EXIT_OK
    import subprocess

    try:
        seconds = engine_venv.run(plan, log=say)
    except subprocess.CalledProcessError as e:
        raise InstallerError(f"engine environment: `{engine_venv.format_command(e.cmd)}` failed "
                             f"(exit {e.returncode}); see pip's output above") from None
    found = engine_venv.installed_torch(python)
    say(f"engine environment ready in {seconds:.0f} s: {python} (torch {found and found.get('version')})")
    print(python)
    return EXIT_OK


def _wheels_arg(value) -> Path | None:
    """``--wheels DIR``: an existing folder (the error names the option and what it expects)."""
    if not value:
        return None
    wheels = Path(value).expanduser()
    if not wheels.is_dir():
        raise InstallerError(f"--wheels: {wheels} is not a folder; expected the folder holding the .whl files "
                             f"of torch and the engine's requirements", EXIT_USAGE)
    return wheels.absolute()


# --- models -------------------------------------------------------------------------------------------

def _models_dir_arg(value):
    return Path(value).expanduser() if value else None


def cmd_models_download(args) -> int:
    from .download import DownloadError, download_model
    from .hub_plan import human
    from .model_list import spec_or_error

    models_dir = None
    if args.models_dir is not None:
        from core.contract import paths

        models_dir = paths.models_dir() if args.models_dir == "" else Path(args.models_dir).expanduser()
    worst = EXIT_OK
    for name in args.names:
        try:
            spec = spec_or_error(name)
        except KeyError as e:
            raise InstallerError(str(e.args[0]), EXIT_USAGE) from None
        try:
            rep = download_model(spec, models_dir=models_dir, config_only=args.config_only, revision=args.revision)
        except DownloadError as e:
            offline_ok = _installed_despite(spec, e, models_dir)
            if offline_ok is not None:
                say(f"{spec.key}: already installed at {offline_ok}; {e}")
                say(f"{spec.key}: not checked against the hub this time")
                print(offline_ok)
                continue
            say(f"error: {e}")
            worst = worst or e.code
            continue
        moved = rep.downloaded_bytes
        say(f"{spec.key}: done in {rep.seconds:.1f} s: {human(moved)} downloaded, {human(rep.reused_bytes)} "
            f"reused, every file verified against the hub's checksums")
        if models_dir is not None and not args.config_only:
            from core.contract import paths

            if Path(models_dir).resolve() != paths.models_dir().resolve():
                say(f"note: {models_dir} is not the app's models folder; set DD_MODELS_DIR={models_dir} "
                    f"so that the engine looks there")
        print(rep.folder)
    return worst


def _installed_despite(spec, err, models_dir):
    """The folder of ``spec`` when the hub could not be reached but the model is already complete."""
    from .download import HubUnreachable

    if not isinstance(err, HubUnreachable):
        return None
    from core.contract import paths
    from core.models.resolver import ModelError, _search_spec

    try:
        found = _search_spec(spec, Path(models_dir or paths.models_dir()), None)
    except ModelError:
        return None
    return found.path if found else None


def cmd_models_list(args) -> int:
    from .model_list import custom_rows, format_table, lama_row, rows

    table = rows(_models_dir_arg(args.models_dir))
    lama = lama_row(_models_dir_arg(args.models_dir))
    if lama:
        table.append(lama)
    if args.json:
        import json

        table += custom_rows(_models_dir_arg(args.models_dir))
        print(json.dumps([{"key": r.key, "title": r.title, "installed": r.installed, "bytes": r.bytes,
                           "path": str(r.path or ""), "source": r.source} for r in table]))
        return EXIT_OK
    from core.contract import paths
    from core.models.hub import hf_hub_cache

    print(f"models folder: {_models_dir_arg(args.models_dir) or paths.models_dir()}")
    print(f"Hugging Face cache: {hf_hub_cache()}")
    print(format_table(table))
    return EXIT_OK


def cmd_models_import(args) -> int:
    from . import importer

    try:
        result = importer.import_model(Path(args.path).expanduser(), name=args.name,
                                       config=Path(args.config).expanduser() if args.config else None,
                                       models_dir=_models_dir_arg(args.models_dir), force=args.force, log=say,
                                       prediction=args.prediction, fetch_configs=args.fetch_configs)
    except importer.ImportRefused as e:
        raise InstallerError(str(e), e.code) from None
    print(result)
    return EXIT_OK


def cmd_models_remove(args) -> int:
    from .hub_plan import human
    from .model_list import remove

    try:
        freed = remove(args.name, _models_dir_arg(args.models_dir))
    except KeyError as e:
        raise InstallerError(str(e.args[0]), EXIT_USAGE) from None
    except OSError as e:
        raise InstallerError(f"{args.name} could not be removed completely: {e.strerror} ({e.filename})") from None
    say(f"{args.name} removed: {human(freed)} freed")
    print(freed)
    return EXIT_OK


# --- plugin -------------------------------------------------------------------------------------------

def cmd_plugin(args) -> int:
    from . import plugin_install

    try:
        results = plugin_install.install(
            source=Path(args.source).expanduser() if args.source else None,
            krita_dirs=[Path(args.krita_dir).expanduser()] if args.krita_dir else None,
            engine_python=Path(args.engine_python) if args.engine_python else None, log=say)
    except plugin_install.PluginInstallError as e:
        raise InstallerError(str(e)) from None
    for r in results:
        print(r.resource_dir)
    return EXIT_OK


def cmd_uninstall(args) -> int:
    from . import plugin_install

    results = plugin_install.uninstall(krita_dirs=[Path(args.krita_dir).expanduser()] if args.krita_dir else None,
                                       log=say)
    if not results:
        say("nothing to uninstall: no Diffusion Dock install was found")
    return EXIT_OK


# --- package ------------------------------------------------------------------------------------------

def cmd_package(args) -> int:
    from core.contract import atomic

    from . import package, plugin_install

    try:
        path = package.build(Path(args.out).expanduser(), source=Path(args.source) if args.source
                             else package.DEFAULT_SOURCE)
    except (plugin_install.PluginInstallError, atomic.WriteError) as e:
        raise InstallerError(str(e)) from None
    say(f"release zip for Krita's Tools ▸ Scripts ▸ Import Python Plugin from File…: {path}")
    print(path)
    return EXIT_OK


# --- doctor -------------------------------------------------------------------------------------------

def cmd_doctor(args) -> int:
    from . import doctor

    return doctor.run(models_dir=_models_dir_arg(args.models_dir), load=args.load, out=sys.stdout)


# --- setup (the dock's first run) -----------------------------------------------------------------------

def cmd_setup(args) -> int:
    import json

    from . import engine_venv, setup_run

    venv = Path(args.venv).expanduser() if args.venv else engine_venv.default_venv()
    models = args.models if args.models is not None else [DEFAULT_MODEL]
    wheels = Path(args.wheels).expanduser().absolute() if args.wheels else None   # checked by the setup
    if args.plan:
        print(json.dumps(setup_run.plan(venv, models, args.torch, wheels)))
        return EXIT_OK
    return setup_run.setup(venv, models, torch=args.torch, wheels=wheels,
                           plugin_dir=Path(args.plugin_dir).expanduser() if args.plugin_dir else None)


# --- all ------------------------------------------------------------------------------------------------

def cmd_all(args) -> int:
    """engine → models download → plugin → doctor, the last three inside the engine's environment."""
    import subprocess

    from . import engine_venv

    eargs = argparse.Namespace(torch=args.torch, torch_index=args.torch_index, venv=args.venv, python=None,
                               dry_run=False, no_editable=False, wheels=args.wheels)
    cmd_engine(eargs)
    venv = Path(args.venv).expanduser() if args.venv else engine_venv.default_venv()
    py = str(engine_venv.venv_python(venv))
    env = dict(os.environ, DD_ENGINE_VENV=str(venv))
    steps = [["models", "download", *(args.models or [DEFAULT_MODEL])], ["plugin"], ["doctor"]]
    if args.krita_dir:
        steps[1] += ["--krita-dir", args.krita_dir]
    if args.source:
        steps[1] += ["--source", args.source]
    for step in steps:
        say(f"== python -m installer {' '.join(step)}")
        rc = subprocess.run([py, "-m", "installer", *step], cwd=str(engine_venv.ROOT), env=env).returncode
        if rc != 0:
            return rc
    return EXIT_OK


# --- parser -------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m installer",
                                 description="Install Diffusion Dock: engine environment, models, Krita plugin.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def torch_opts(p):
        p.add_argument("--torch", help="torch build: auto (default), cuda, rocm, mps, cpu, a build tag (cu128, "
                                       "rocm6.4), a version or a pip requirement")
        p.add_argument("--torch-index", help="package index URL to take torch from (overrides the choice)")
        p.add_argument("--venv", help="where the engine environment lives (default: .venv in the engine folder, "
                                      "or DD_ENGINE_VENV)")
        p.add_argument("--wheels", metavar="DIR",
                       help="install torch and the engine's requirements from this folder of .whl files only "
                            "(pip --no-index --find-links DIR): offline, nothing is downloaded")

    p = sub.add_parser("all", help="everything: engine, models download sd2-inpainting, plugin, doctor")
    torch_opts(p)
    p.add_argument("--models", nargs="*", help=f"models to download (default {DEFAULT_MODEL})")
    p.add_argument("--krita-dir", help="install the plugin into this Krita resource folder only")
    p.add_argument("--source", help=argparse.SUPPRESS)  # plugin source folder (tests)

    p = sub.add_parser("setup", help="the dock's first-run setup: engine, models, check, as JSON events on stdout")
    torch_opts(p)
    p.add_argument("--models", nargs="*", help=f"models to download (default {DEFAULT_MODEL})")
    p.add_argument("--plan", action="store_true", help="print what was detected and the disk needed, as JSON")
    p.add_argument("--plugin-dir", help="the installed dock's folder: engine.json is written there")

    p = sub.add_parser("engine", help="create the engine's virtual environment with the right torch")
    torch_opts(p)
    p.add_argument("--python", help="Python used to create the environment (default: this one)")
    p.add_argument("--dry-run", action="store_true", help="print the exact commands and change nothing")
    p.add_argument("--no-editable", action="store_true", help="install a copy of the engine instead of a link")

    p = sub.add_parser("models", help="download, import and list models")
    msub = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    d = msub.add_parser("download", help="fetch catalogue models from the Hugging Face hub, verified")
    d.add_argument("names", nargs="+", metavar="NAME", help="catalogue keys or hub ids (see `models list`)")
    d.add_argument("--models-dir", nargs="?", const="", default=None, metavar="DIR",
                   help="put the model in DIR/<key> (without DIR: the app's models folder) instead of the HF cache")
    d.add_argument("--config-only", action="store_true",
                   help="only the configs (no weights): enough to load a single-file .safetensors checkpoint")
    d.add_argument("--revision", default="main", help="hub branch, tag or commit (default main)")
    i = msub.add_parser("import", help="import a diffusers folder or a .safetensors checkpoint into the app")
    i.add_argument("path", help="a diffusers folder, a .safetensors file, or big-lama.pt")
    i.add_argument("--name", help="folder name in the models folder (default: the catalogue key or file name)")
    i.add_argument("--config", help="config folder (diffusers layout) for a single-file checkpoint")
    i.add_argument("--models-dir", help="the app's models folder (default: platformdirs or DD_MODELS_DIR)")
    i.add_argument("--force", action="store_true", help="replace an existing model of the same name")
    i.add_argument("--prediction", choices=("v", "epsilon"),
                   help="for an SD2 text-to-image file that does not say: v (2-1, 768 px) or epsilon (2-1-base, 512 px); "
                        "without it such a file exits 4")
    i.add_argument("--fetch-configs", action="store_true",
                   help="fetch the matching catalogue model's configs (no weights) when they are missing")
    lp = msub.add_parser("list", help="installed and missing models, with their disk use")
    lp.add_argument("--models-dir", help="the app's models folder (default: platformdirs or DD_MODELS_DIR)")
    lp.add_argument("--json", action="store_true", help="one JSON list (imported models too)")
    rp = msub.add_parser("remove", help="delete a model (its models-folder copy and its HF cache copy)")
    rp.add_argument("name", help="a catalogue key or an imported model's name")
    rp.add_argument("--models-dir", help="the app's models folder (default: platformdirs or DD_MODELS_DIR)")

    p = sub.add_parser("plugin", help="install the Krita plugin into every Krita resource folder found")
    p.add_argument("--krita-dir", help="this Krita resource folder only (the folder holding pykrita/)")
    p.add_argument("--source", help=argparse.SUPPRESS)  # plugin source folder (tests)
    p.add_argument("--engine-python", help="Python of the engine environment (default: the engine's .venv)")

    p = sub.add_parser("package", help="build the release zip that Krita's Import Python Plugin from File takes")
    p.add_argument("--out", default="dist", help="folder for diffusion_dock-<version>.zip (default dist)")
    p.add_argument("--source", help=argparse.SUPPRESS)  # plugin source folder (tests)

    p = sub.add_parser("uninstall", help="remove exactly what `plugin` installed and disable it in kritarc")
    p.add_argument("--krita-dir", help="this Krita resource folder only")

    p = sub.add_parser("doctor", help="check everything; exits 0 when inpainting can run")
    p.add_argument("--models-dir", help="the app's models folder (default: platformdirs or DD_MODELS_DIR)")
    p.add_argument("--load", action="store_true", help="also load the inpainting model (slower, catches more)")
    return ap


COMMANDS = {"engine": cmd_engine, "plugin": cmd_plugin, "uninstall": cmd_uninstall, "doctor": cmd_doctor,
            "all": cmd_all, "package": cmd_package,
            "setup": cmd_setup}
MODELS = {"download": cmd_models_download, "list": cmd_models_list, "import": cmd_models_import,
          "remove": cmd_models_remove}
# What each command imports from the engine's environment.
NEEDS = {"models": ("huggingface_hub", "safetensors"), "doctor": ("torch",), "plugin": ()}


def _reexec_in_engine_env(args, argv) -> None:
    """Run again with the engine's Python when this one lacks the packages the command needs."""
    needs = NEEDS.get(args.command, ())
    missing = [m for m in needs if importlib.util.find_spec(m) is None]
    if not missing:
        return
    from . import engine_venv

    py = engine_venv.venv_python(engine_venv.default_venv())
    if py.exists() and Path(sys.executable).absolute() != py.absolute() and not os.environ.get("DD_INSTALLER_REEXEC"):
        env = dict(os.environ, DD_INSTALLER_REEXEC="1")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(engine_venv.ROOT), env.get("PYTHONPATH")]))
        os.execve(str(py), [str(py), "-m", "installer", *argv], env)
    if args.command == "doctor":
        return  # doctor reports the missing engine itself, with its fix
    raise InstallerError(f"this Python ({sys.executable}) lacks {', '.join(missing)}: create the engine's "
                         f"environment first with `python3 -m installer engine`", EXIT_USAGE)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        _reexec_in_engine_env(args, argv)
        if args.command == "models":
            return MODELS[args.models_command](args)
        return COMMANDS[args.command](args)
    except InstallerError as e:
        say(f"error: {e}")
        return e.code
    except KeyboardInterrupt:
        say("interrupted: run the same command again to continue (downloads resume where they stopped)")
        return 130
