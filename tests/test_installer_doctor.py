"""``doctor`` on this machine: CPU, the dtype policy, the models, Krita, and a verdict with fixes."""

from __future__ import annotations

import os
import subprocess
import sys

from core.models.device import current_policy

from .conftest import ROOT
from .test_installer_plugin import DESKTOP


def doctor(tmp_path, models_dir, *args):
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = dict(os.environ, DD_MODELS_DIR=str(models_dir), HF_HOME=str(tmp_path / "hf"), HOME=str(home))
    for k in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "DD_DEVICE", "DD_DTYPE"):
        env.pop(k, None)
    return subprocess.run([sys.executable, "-m", "installer", "doctor", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)


def field(out: str, name: str) -> str:
    return next(ln.strip()[len(name):].strip() for ln in out.splitlines() if ln.strip().startswith(name + " "))


def test_ready_with_the_tiny_models(tiny_root, tmp_path):
    out = doctor(tmp_path, tiny_root, "--load")
    assert out.returncode == 0, out.stdout + out.stderr
    policy = current_policy()
    assert field(out.stdout, "device").startswith("cpu (")
    assert f"UNet/text encoder {policy.dtype}" in field(out.stdout, "dtype policy")
    if "bf16" in policy.reason:  # this machine (avx512_bf16 / AMX): the bf16 policy
        assert policy.dtype == "bfloat16" and "bfloat16" in field(out.stdout, "dtype policy")
    assert field(out.stdout, "torch").startswith("2.13.0")
    assert field(out.stdout, "memory").startswith("RAM ")
    assert field(out.stdout, "python").startswith(sys.version.split()[0])
    assert field(out.stdout, "sd2-inpainting").startswith(f"found: {tiny_root / 'sd2-inpainting'}")
    assert "loads on cpu" in field(out.stdout, "load test")
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("verdict: READY: inpainting runs on cpu in " + policy.dtype)


def test_not_ready_without_models_and_says_how_to_fix(tmp_path):
    out = doctor(tmp_path, tmp_path / "no-models")
    assert out.returncode != 0
    lines = out.stdout.strip().splitlines()
    assert lines[-1].startswith("verdict: NOT READY")
    i = next(i for i, ln in enumerate(lines) if ln.startswith("problem:") and "inpainting" in ln)
    assert lines[i + 1].strip() == "fix: python -m installer models download sd2-inpainting"


def test_reports_the_plugin_state_of_each_krita(tiny_root, tmp_path):
    from installer import kritarc, plugin_install

    src = tmp_path / "plugin"
    (src / "diffusion_dock").mkdir(parents=True)
    (src / "diffusion_dock.desktop").write_text(DESKTOP)
    (src / "diffusion_dock" / "__init__.py").write_text("")
    home = tmp_path / "home"
    [res] = plugin_install.install(src, system="Linux", home=home, env={}, engine_python=sys.executable,
                                   log=lambda m: None)
    out = doctor(tmp_path, tiny_root)
    line = field(out.stdout, "Linux")
    assert "plugin installed, all files present, enabled in kritarc" in line and "MISSING" not in line
    assert out.returncode == 0
    kritarc.write_key(res.target.kritarc, "enable_diffusion_dock", "false")
    out = doctor(tmp_path, tiny_root)
    assert "DISABLED in kritarc" in field(out.stdout, "Linux")
    assert "fix: python -m installer plugin" in out.stdout
    assert out.returncode == 0  # the main job still runs (CLI, standalone editor)
