"""``doctor``: what this machine has, what is missing, and the command that fixes each problem.

Exit status 0 when the main job (inpainting) can run: torch imports, a device policy is chosen and
the resolver finds the inpainting model (``--load`` also loads it).  Plugin and optional-model problems
are reported with their fix but do not fail the check.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .hub_plan import human


@dataclass
class Findings:
    lines: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)   # (problem, fix), fatal
    warnings: list[tuple[str, str]] = field(default_factory=list)   # (problem, fix), not fatal
    summary: str = ""

    def add(self, label: str, value: str) -> None:
        self.lines.append(f"{label:<18} {value}")


def _torch_section(f: Findings):
    try:
        import torch
    except ImportError:
        f.add("torch", "NOT INSTALLED")
        f.problems.append(("torch is not installed in this Python", "python3 -m installer engine"))
        return None
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else (
        f"ROCm {torch.version.hip}" if getattr(torch.version, "hip", None) else "CPU build")
    f.add("torch", f"{torch.__version__} ({build})")
    from core.models.device import choose_policy, probe

    facts = probe()
    try:
        policy = choose_policy(facts, os.environ.get("DD_DEVICE") or None, os.environ.get("DD_DTYPE") or None)
    except ValueError as e:
        f.add("device", f"ERROR: {e}")
        f.problems.append((f"device/dtype override: {e}", "unset DD_DEVICE / DD_DTYPE or pick a valid pair"))
        return None
    if policy.device == "cuda":
        mem = f"GPU {facts.cuda_name}, {human(facts.cuda_memory)} memory"
        if facts.cuda_memory and facts.cuda_memory < 4e9:
            f.warnings.append((f"the GPU has {human(facts.cuda_memory)}; SD2 at 512 px wants about 4 GB",
                               "close other GPU programs, or run on the CPU with DD_DEVICE=cpu"))
    else:
        mem = f"RAM {human(facts.ram)}" if facts.ram else "RAM unknown"
        if facts.ram and facts.ram < 8e9:
            f.warnings.append((f"{human(facts.ram)} of RAM; SD2 on the CPU wants 8 GB or more",
                               "close other programs while generating"))
    f.add("device", f"{policy.device} ({policy.reason})")
    f.add("memory", mem)
    f.add("dtype policy", f"UNet/text encoder {policy.dtype}, VAE {policy.vae_dtype}, "
                          f"x4 VAE {policy.upscaler_vae_dtype}")
    if policy.device == "cpu":
        bf16 = policy.dtype == "bfloat16"
        f.warnings.append(("no GPU: every job runs on the CPU" + ("" if bf16 else " in float32 (no bf16 support)")
                           + ", a 512 px inpaint takes minutes",
                           "use a machine with a GPU, or connect to one in remote mode"))
    if facts.cuda is False and shutil.which("nvidia-smi"):
        f.problems.append(("an NVIDIA GPU is present but this torch cannot use it",
                           "python3 -m installer engine --torch cuda"))
    return policy


def _models_section(f: Findings, models_dir: Path | None, load: bool, policy) -> bool:
    from core.contract import paths
    from core.contract.catalog import CATALOG, MODE_MODELS
    from core.models.hub import hf_hub_cache
    from core.models.resolver import ModelError, resolve

    from .model_list import disk_use

    md = Path(models_dir) if models_dir else paths.models_dir()
    f.add("models dir", f"{md}" + ("" if md.exists() else " (does not exist yet)"))
    f.add("HF cache", str(hf_hub_cache()))
    main_ok = False
    main_key = MODE_MODELS["inpaint"][0]
    for spec in CATALOG.values():
        try:
            r = resolve(spec.key, models_dir=md)
            f.add(f"  {spec.key}", f"found: {r.path} [{r.source}, {r.prediction}, {human(disk_use(r.path))}]")
            if spec.key == main_key:
                main_ok = True
        except ModelError as e:
            first = str(e).split(". ")[0]
            f.add(f"  {spec.key}", f"missing ({'optional; ' if spec.optional else ''}{spec.install_hint()})")
            if spec.key == main_key:
                f.problems.append((f"{first}: the inpainting model is needed for the main job",
                                   spec.install_hint()))
    if main_ok and load and policy is not None:
        from core.models.manager import ModelManager

        try:
            ModelManager(policy, models_dir=md).get("inpaint")
            f.add("  load test", f"{main_key} loads on {policy.device}")
        except Exception as e:
            main_ok = False
            from core.models.resolver import ModelError

            why = str(e) if isinstance(e, ModelError) else "its files are damaged or incomplete"
            f.problems.append((f"{main_key} is installed but does not load: {why}",
                               f"{CATALOG[main_key].install_hint()} (fetches it again, verified)"))
    try:
        from core.lama import weights as lama  # type: ignore[import-not-found]

        f.add("  big-lama", "found" if lama.lama_installed(md) else
              "missing (optional; python -m installer models import big-lama.pt)")
    except ImportError:
        pass
    return main_ok


def _krita_section(f: Findings, system: str | None, home: Path | None, env: dict | None) -> None:
    from . import plugin_install
    from .krita_paths import candidates

    system = system or platform.system()
    exe = shutil.which("krita")
    f.add("krita", exe or "no krita executable on PATH")
    any_found = False
    for t in candidates(system, home or Path.home(), env):
        if not t.exists():
            continue
        any_found = True
        s = plugin_install.state(t)
        if not s.installed:
            state = "plugin not installed"
            f.warnings.append((f"the plugin is not installed in {t.name} Krita ({t.resource_dir})",
                               "python -m installer plugin"))
        else:
            bits = ["plugin installed",
                    "all files present" if not s.missing_files else f"{len(s.missing_files)} files missing",
                    "enabled in kritarc" if s.enabled else "DISABLED in kritarc",
                    f"engine {s.engine_python}" + ("" if s.engine_python_ok else " (MISSING)")]
            state = ", ".join(bits)
            if not s.ok:
                f.warnings.append((f"the plugin in {t.name} Krita needs repair ({state})", "python -m installer plugin"))
        f.add(f"  {t.name}", f"{t.resource_dir}: {state}")
    if not any_found:
        f.add("  resources", "no Krita resource folder found (Krita not installed, or never started)")
        if exe:
            f.warnings.append(("Krita is installed but the plugin is not", "python -m installer plugin"))


def os_description() -> str:
    name = platform.system()
    if name == "Linux":
        try:
            info = platform.freedesktop_os_release()
            name = info.get("PRETTY_NAME") or info.get("NAME") or name
        except OSError:
            pass
    elif name == "Darwin":
        name = f"macOS {platform.mac_ver()[0]}"
    elif name == "Windows":
        name = f"Windows {platform.release()} ({platform.version()})"
    return f"{name}, kernel {platform.release()}, {platform.machine()}"


def collect(models_dir: Path | None = None, *, load: bool = False, system: str | None = None,
            home: Path | None = None, env: dict | None = None) -> tuple[Findings, bool]:
    f = Findings()
    f.add("os", os_description())
    f.add("python", f"{sys.version.split()[0]} ({sys.executable})")
    policy = _torch_section(f)
    main_ok = _models_section(f, models_dir, load, policy) if policy is not None else False
    _krita_section(f, system, home, env)
    ready = main_ok and policy is not None and not f.problems
    if ready:
        f.summary = (f"READY: inpainting runs on {policy.device} in {policy.dtype}"
                     + (f" ({len(f.warnings)} warning{'s' if len(f.warnings) != 1 else ''})" if f.warnings else ""))
    else:
        f.summary = f"NOT READY: {len(f.problems)} problem{'s' if len(f.problems) != 1 else ''} to fix"
    return f, ready


def run(models_dir: Path | None = None, *, load: bool = False, out=None) -> int:
    out = out or sys.stdout
    f, ready = collect(models_dir, load=load)
    for line in f.lines:
        print(line, file=out)
    for problem, fix in f.problems:
        print(f"problem: {problem}\n    fix: {fix}", file=out)
    for problem, fix in f.warnings:
        print(f"warning: {problem}\n    fix: {fix}", file=out)
    print(f"verdict: {f.summary}", file=out)
    return 0 if ready else 3
