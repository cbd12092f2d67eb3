"""The engine environment: which torch for which hardware (every branch), and the exact pip commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from installer import engine_venv
from installer.torch_choice import (
    CUDA_BUILDS,
    PYTORCH_INDEX,
    TORCH_VERSION,
    HostFacts,
    UnsupportedHost,
    choose_torch,
    parse_nvidia_smi,
    parse_rocminfo,
)

from .conftest import ROOT

LINUX_CPU = HostFacts("Linux", "x86_64")
NVIDIA = HostFacts("Linux", "x86_64", nvidia_smi=True, cuda_driver=(12, 9), gpus=("NVIDIA GeForce RTX 4090",))


def test_cpu_machine_takes_the_pinned_torch_from_the_default_index():
    c = choose_torch(LINUX_CPU)
    assert (c.backend, c.requirement, c.index_url) == ("cpu", f"torch=={TORCH_VERSION}", None)
    assert TORCH_VERSION == "2.13.0"
    assert any("--torch-index" in n for n in c.notes)  # the smaller CPU build is one flag away


def test_windows_cpu_has_no_linux_note():
    c = choose_torch(HostFacts("Windows", "AMD64"))
    assert c.backend == "cpu" and c.index_url is None and not c.notes


@pytest.mark.parametrize("driver, build", [((13, 2), "cu130"), ((12, 9), "cu128"), ((12, 8), "cu128"),
                                           ((12, 6), "cu126")])
def test_cuda_build_is_the_newest_the_driver_supports(driver, build):
    facts = HostFacts("Linux", "x86_64", nvidia_smi=True, cuda_driver=driver, gpus=("RTX",))
    c = choose_torch(facts)
    assert c.backend == "cuda" and c.build == build and c.index_url == f"{PYTORCH_INDEX}/{build}"
    assert c.requirement == f"torch=={TORCH_VERSION}"


def test_windows_nvidia_uses_the_cuda_index_too():
    c = choose_torch(HostFacts("Windows", "AMD64", nvidia_smi=True, cuda_driver=(12, 8)))
    assert c.backend == "cuda" and c.index_url.endswith("/cu128")


def test_old_nvidia_driver_falls_back_to_cpu_and_says_update_the_driver():
    c = choose_torch(HostFacts("Linux", "x86_64", nvidia_smi=True, cuda_driver=(11, 8)))
    assert c.backend == "cpu" and c.index_url is None
    assert any("update the driver" in n for n in c.notes)


def test_unreadable_driver_version_takes_the_oldest_cuda_build_with_a_note():
    c = choose_torch(HostFacts("Linux", "x86_64", nvidia_smi=True, cuda_driver=None))
    assert c.build == CUDA_BUILDS[-1][0] and c.notes


def test_rocm_on_linux():
    c = choose_torch(HostFacts("Linux", "x86_64", rocm=True, rocm_version=(6, 4)))
    assert c.backend == "rocm" and c.index_url == f"{PYTORCH_INDEX}/rocm6.4"
    c = choose_torch(HostFacts("Linux", "x86_64", rocm=True, rocm_version=(7, 2)))
    assert c.build == "rocm7.1"


def test_rocm_too_old_and_rocm_on_windows_use_the_cpu():
    assert choose_torch(HostFacts("Linux", "x86_64", rocm=True, rocm_version=(5, 7))).backend == "cpu"
    c = choose_torch(HostFacts("Windows", "AMD64", rocm=True))
    assert c.backend == "cpu" and any("Linux only" in n for n in c.notes)


def test_apple_silicon_takes_the_pypi_wheel_with_mps():
    c = choose_torch(HostFacts("Darwin", "arm64"))
    assert (c.backend, c.index_url) == ("mps", None)
    assert choose_torch(HostFacts("Darwin", "arm64"), "cpu").backend == "cpu"


def test_intel_mac_is_refused_with_the_reason():
    with pytest.raises(UnsupportedHost, match="Intel Macs"):
        choose_torch(HostFacts("Darwin", "x86_64"))


@pytest.mark.parametrize("override, backend, index", [
    ("cpu", "cpu", None),
    ("cu126", "cuda", f"{PYTORCH_INDEX}/cu126"),
    ("rocm6.4", "rocm", f"{PYTORCH_INDEX}/rocm6.4"),
    ("auto", "cuda", f"{PYTORCH_INDEX}/cu128"),
])
def test_torch_override_picks_the_backend(override, backend, index):
    c = choose_torch(NVIDIA, override)
    assert c.backend == backend and c.index_url == index


def test_torch_override_with_a_version_or_requirement_and_index():
    assert choose_torch(LINUX_CPU, "2.9.1").requirement == "torch==2.9.1"
    c = choose_torch(LINUX_CPU, "torch>=2.8,<3", index_url="https://example.invalid/simple")
    assert c.requirement == "torch>=2.8,<3" and c.index_url == "https://example.invalid/simple"
    assert choose_torch(NVIDIA, index_url="https://mirror.invalid/cu128").index_url == "https://mirror.invalid/cu128"


@pytest.mark.parametrize("bad, match", [("gpu", "--torch must be"), ("mps", "only on macOS")])
def test_bad_overrides_are_refused(bad, match):
    with pytest.raises((ValueError, UnsupportedHost), match=match):
        choose_torch(LINUX_CPU, bad)
    with pytest.raises(UnsupportedHost, match="no CUDA"):
        choose_torch(HostFacts("Darwin", "arm64"), "cuda")


NVIDIA_SMI = """\
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 570.86.15              Driver Version: 570.86.15      CUDA Version: 12.8     |
|-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
|=========================================+========================+======================|
|   0  NVIDIA GeForce RTX 3090        Off |   00000000:01:00.0  On |                  N/A |
+-----------------------------------------+------------------------+----------------------+
"""
ROCMINFO = """\
Agent 1
  Name:                    AMD Ryzen 9 7950X
  Marketing Name:          AMD Ryzen 9 7950X 16-Core Processor
Agent 2
  Name:                    gfx1100
  Marketing Name:          Radeon RX 7900 XTX
"""


def test_probe_parsers():
    assert parse_nvidia_smi(NVIDIA_SMI) == ((12, 8), ("NVIDIA GeForce RTX 3090",))
    assert parse_rocminfo(ROCMINFO) == (True, ("Radeon RX 7900 XTX",))
    assert parse_rocminfo("Agent 1\n  Name: AMD Ryzen\n")[0] is False


# --- the pip commands ---------------------------------------------------------------------------

def test_plan_for_a_new_environment(tmp_path):
    choice = choose_torch(LINUX_CPU)
    p = engine_venv.plan(choice, tmp_path / "venv", base_python="/usr/bin/python3", root=ROOT, venv_exists=False)
    py = str(tmp_path / "venv" / "bin" / "python")
    assert p.commands == [
        ["/usr/bin/python3", "-m", "venv", str(tmp_path / "venv")],
        [py, "-m", "pip", "install", "--disable-pip-version-check", "torch==2.13.0"],
        [py, "-m", "pip", "install", "--disable-pip-version-check", "-c", str(tmp_path / "venv" / "dd-torch-constraint.txt"),
         "-e", str(ROOT)],
    ]
    assert p.constraint_text == "torch==2.13.0\n"


def test_plan_keeps_a_matching_torch_and_pins_it(tmp_path):
    found = {"version": "2.13.0+cpu", "cuda": None, "hip": None}
    p = engine_venv.plan(choose_torch(LINUX_CPU), tmp_path, found_torch=found, venv_exists=True)
    assert len(p.commands) == 1 and p.commands[0][-2:] == ["-e", str(engine_venv.ROOT)]
    assert p.constraint_text == "torch==2.13.0\n" and any("already matches" in s for s in p.skipped)
    p.stamp.write_text("ok\n")  # what a successful run leaves: the next run has nothing to do
    again = engine_venv.plan(choose_torch(LINUX_CPU), tmp_path, found_torch=found, venv_exists=True)
    assert again.commands == [] and any("requirements are installed" in s for s in again.skipped)


def test_plan_replaces_a_cpu_torch_when_cuda_is_wanted(tmp_path):
    found = {"version": "2.13.0+cpu", "cuda": None, "hip": None}
    p = engine_venv.plan(choose_torch(NVIDIA), tmp_path, found_torch=found, venv_exists=True)
    assert p.commands[0][1:] == ["-m", "pip", "uninstall", "-y", "torch"]
    assert p.commands[1][-3:] == ["torch==2.13.0", "--index-url", f"{PYTORCH_INDEX}/cu128"]
    assert engine_venv.torch_matches({"version": "2.13.0+cu128", "cuda": "12.8", "hip": None}, choose_torch(NVIDIA))
    assert not engine_venv.torch_matches({"version": "2.12.0+cu128", "cuda": "12.8"}, choose_torch(NVIDIA))


def test_engine_dry_run_prints_the_exact_commands(tmp_path):
    env = dict(os.environ, PATH=os.environ.get("PATH", ""))
    out = subprocess.run([sys.executable, "-m", "installer", "engine", "--dry-run", "--venv", str(tmp_path / "v"),
                          "--torch", "cpu"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[1].endswith(f"-m venv {tmp_path / 'v'}")
    assert lines[2].endswith("pip install --disable-pip-version-check torch==2.13.0")
    assert lines[3].endswith(f"-e {ROOT}") and "dd-torch-constraint.txt" in lines[3]
    assert "torch==2.13.0 (cpu)" in out.stderr
    assert not (tmp_path / "v").exists()  # a dry run changes nothing


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("DD_TEST_ENGINE_VENV"), reason="set DD_TEST_ENGINE_VENV=1: builds a real "
                    "engine environment (several minutes)")
def test_engine_creates_a_working_environment(tmp_path):
    venv = tmp_path / "engine"
    out = subprocess.run([sys.executable, "-m", "installer", "engine", "--venv", str(venv)], cwd=ROOT,
                         capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    py = engine_venv.venv_python(venv)
    found = engine_venv.installed_torch(py)
    assert found and found["version"].startswith("2.13.0")
    check = subprocess.run([str(py), "-c", "import core.pipelines, diffusers, huggingface_hub, qasync; print('ok')"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert check.stdout.strip() == "ok", check.stderr
    again = subprocess.run([sys.executable, "-m", "installer", "engine", "--venv", str(venv), "--dry-run"],
                           cwd=ROOT, capture_output=True, text=True)
    assert "already matches" in again.stderr and "requirements are installed" in again.stderr
    assert [ln for ln in again.stdout.splitlines() if not ln.startswith("#")] == []
    assert Path(str(py)).exists()
