"""Which torch build the engine needs on this machine: a pure decision from detected facts.

``probe_host()`` looks at the machine (``nvidia-smi``, ``rocminfo``, the platform); ``choose_torch()``
turns those facts, and an optional ``--torch`` override, into a pip requirement and the package index
to take it from.  Standard library only: this runs before the engine's environment exists.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

# The torch release the engine is tested with.  CI and scripts/setup.sh install the same.
TORCH_VERSION = "2.13.0"
PYTORCH_INDEX = "https://download.pytorch.org/whl"
# Builds PyTorch publishes for TORCH_VERSION, newest first, with the lowest CUDA/ROCm runtime each needs.
# Check this table against the PyTorch "get started" matrix whenever TORCH_VERSION changes.
CUDA_BUILDS: tuple[tuple[str, tuple[int, int]], ...] = (("cu130", (13, 0)), ("cu128", (12, 8)), ("cu126", (12, 6)))
ROCM_BUILDS: tuple[tuple[str, tuple[int, int]], ...] = (("rocm7.1", (7, 1)), ("rocm6.4", (6, 4)))
BACKENDS = ("cuda", "rocm", "mps", "cpu")


class UnsupportedHost(Exception):
    """No torch build can run the engine here (the message says why and what to do)."""


@dataclass(frozen=True)
class HostFacts:
    system: str = "Linux"              # platform.system(): Linux, Windows, Darwin
    machine: str = "x86_64"            # platform.machine(): x86_64, AMD64, arm64, aarch64
    nvidia_smi: bool = False           # nvidia-smi found and ran
    cuda_driver: tuple[int, int] | None = None  # highest CUDA runtime the driver supports ("CUDA Version" of nvidia-smi)
    gpus: tuple[str, ...] = ()         # GPU names, for messages
    rocm: bool = False                 # rocminfo found and lists a gfx agent
    rocm_version: tuple[int, int] | None = None
    python: tuple[int, int] = (3, 11)


@dataclass(frozen=True)
class TorchChoice:
    backend: str                       # cuda | rocm | mps | cpu
    requirement: str                   # pip requirement, e.g. "torch==2.13.0"
    index_url: str | None              # None: pip's configured index (PyPI by default)
    reason: str
    notes: tuple[str, ...] = field(default_factory=tuple)
    build: str | None = None           # cu128, rocm6.4, ... for GPU builds

    def pip_args(self) -> list[str]:
        args = [self.requirement]
        if self.index_url:
            args += ["--index-url", self.index_url]
        return args

    def describe(self) -> str:
        where = self.index_url or "the default package index"
        return f"{self.requirement} ({self.backend}{', ' + self.build if self.build else ''}) from {where}: {self.reason}"


def _version_tuple(text: str) -> tuple[int, int] | None:
    m = re.search(r"(\d+)\.(\d+)", text or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def _pick_build(builds, runtime: tuple[int, int] | None) -> str | None:
    """Newest build whose runtime requirement the installed driver/ROCm meets (oldest if unknown)."""
    if runtime is None:
        return builds[-1][0]
    for name, need in builds:
        if runtime >= need:
            return name
    return None


def _parse_override(override: str | None) -> tuple[str | None, str | None, str | None]:
    """(backend, build, requirement) from ``--torch``: a backend (cuda, rocm, mps, cpu, auto), a build
    tag (cu128, rocm6.4), a version (2.9.1) or a full requirement (torch==2.9.1, "torch>=2.8,<3")."""
    if not override or override == "auto":
        return None, None, None
    o = override.strip()
    if o in BACKENDS:
        return o, None, None
    if re.fullmatch(r"cu\d{3}", o):
        return "cuda", o, None
    if re.fullmatch(r"rocm\d+(\.\d+)*", o):
        return "rocm", o, None
    if re.fullmatch(r"\d+(\.\d+){1,2}", o):
        return None, None, f"torch=={o}"
    if o.startswith("torch") and re.search(r"[=<>~!]", o):
        return None, None, o
    raise ValueError(f"--torch must be auto, cuda, rocm, mps, cpu, a build tag (cu128, rocm6.4), a version "
                     f"(2.13.0) or a requirement (torch==2.13.0); got {override!r}")


def choose_torch(facts: HostFacts, override: str | None = None, index_url: str | None = None) -> TorchChoice:
    """The torch requirement and index for ``facts``.

    - macOS on Apple silicon: the PyPI wheel (Metal/MPS built in). Intel Macs: unsupported (no wheels).
    - NVIDIA (nvidia-smi works): PyTorch's CUDA index, the newest build the driver supports.
    - AMD on Linux (rocminfo lists a GPU): PyTorch's ROCm index.
    - anything else: the CPU build from the default index.
    ``override`` is the ``--torch`` value, ``index_url`` the ``--torch-index`` value (both win).
    """
    backend, build, requirement = _parse_override(override)
    requirement = requirement or f"torch=={TORCH_VERSION}"
    system = facts.system
    notes: list[str] = []

    if system == "Darwin":
        if facts.machine not in ("arm64", "aarch64"):
            raise UnsupportedHost(
                "PyTorch publishes no wheels for Intel Macs after torch 2.2, and the engine needs torch 2.4 or "
                "newer. Run the engine on an Apple silicon Mac, or on another machine in remote mode.")
        if backend in ("cuda", "rocm"):
            raise UnsupportedHost(f"--torch {override}: macOS has no {backend.upper()} builds; use mps or cpu")
        return TorchChoice(backend or "mps", requirement, index_url, "Apple silicon: the PyPI wheel includes Metal (MPS)")

    if backend is None:
        if facts.nvidia_smi:
            backend = "cuda"
        elif facts.rocm and system == "Linux":
            backend = "rocm"
        else:
            backend = "cpu"
            if facts.rocm:
                notes.append("an AMD GPU was found, but PyTorch publishes ROCm builds for Linux only: using the CPU")

    if backend == "mps":
        raise UnsupportedHost("--torch mps: Apple MPS exists only on macOS")

    if backend == "cuda":
        gpus = ", ".join(facts.gpus) or "NVIDIA GPU"
        chosen = build or _pick_build(CUDA_BUILDS, facts.cuda_driver)
        if chosen is None:
            drv = ".".join(map(str, facts.cuda_driver or ()))
            oldest = CUDA_BUILDS[-1]
            notes.append(f"the NVIDIA driver supports CUDA {drv} but torch {TORCH_VERSION} needs CUDA "
                         f"{'.'.join(map(str, oldest[1]))} or newer: update the driver, then run "
                         f"`python -m installer engine` again. Using the CPU build meanwhile.")
            return TorchChoice("cpu", requirement, index_url, f"{gpus} with an old driver", tuple(notes))
        if facts.cuda_driver is None and build is None:
            notes.append("could not read the driver's CUDA version from nvidia-smi: taking the oldest CUDA build")
        return TorchChoice("cuda", requirement, index_url or f"{PYTORCH_INDEX}/{chosen}",
                           f"{gpus}" + (f", driver CUDA {'.'.join(map(str, facts.cuda_driver))}"
                                        if facts.cuda_driver else ""), tuple(notes), chosen)

    if backend == "rocm":
        if system != "Linux":
            raise UnsupportedHost("PyTorch publishes ROCm builds for Linux only")
        chosen = build or _pick_build(ROCM_BUILDS, facts.rocm_version)
        if chosen is None:
            ver = ".".join(map(str, facts.rocm_version or ()))
            notes.append(f"ROCm {ver} is older than torch {TORCH_VERSION} needs: update ROCm. Using the CPU build.")
            return TorchChoice("cpu", requirement, index_url, "AMD GPU with an old ROCm", tuple(notes))
        return TorchChoice("rocm", requirement, index_url or f"{PYTORCH_INDEX}/{chosen}",
                           "AMD GPU with ROCm" + (f" {'.'.join(map(str, facts.rocm_version))}"
                                                  if facts.rocm_version else ""), tuple(notes), chosen)

    # CPU.
    if system == "Linux" and index_url is None:
        notes.append("on Linux the default index's torch wheel may bring CUDA libraries along; "
                     f"`--torch-index {PYTORCH_INDEX}/cpu` takes the smaller CPU-only build")
    return TorchChoice("cpu", requirement, index_url, "no supported GPU found" if override is None or
                       override == "auto" else "CPU chosen with --torch", tuple(notes))


# --- probing the real machine -------------------------------------------------------------------

def _run(cmd: list[str], timeout: float = 15) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def parse_nvidia_smi(text: str) -> tuple[tuple[int, int] | None, tuple[str, ...]]:
    """(driver's CUDA version, GPU names) from plain ``nvidia-smi`` output."""
    cuda = None
    m = re.search(r"CUDA Version:\s*(\d+\.\d+)", text)
    if m:
        cuda = _version_tuple(m.group(1))
    names = tuple(n.strip() for n in re.findall(r"^\|\s+\d+\s+(.+?)\s{2,}(?:On|Off)\s", text, re.M))
    return cuda, names


def parse_rocminfo(text: str) -> tuple[bool, tuple[str, ...]]:
    """(a GPU agent is present, the GPUs' marketing names) from ``rocminfo`` output."""
    gpus = []
    for agent in re.split(r"^\s*Agent \d+", text, flags=re.M)[1:]:
        if re.search(r"^\s*Name:\s*gfx\d+", agent, re.M):
            m = re.search(r"Marketing Name:\s*(.+)", agent)
            gpus.append(m.group(1).strip() if m else "AMD GPU")
    return bool(gpus), tuple(gpus)


def probe_host() -> HostFacts:
    """Look at this machine: platform, nvidia-smi, rocminfo (each with a timeout)."""
    cuda = None
    gpus: tuple[str, ...] = ()
    nvidia = False
    if shutil.which("nvidia-smi"):
        text = _run(["nvidia-smi"])
        if text is not None:
            nvidia = True
            cuda, gpus = parse_nvidia_smi(text)
    rocm = False
    rocm_version = None
    if not nvidia and shutil.which("rocminfo"):
        text = _run(["rocminfo"])
        if text is not None:
            rocm, gpus = parse_rocminfo(text)
            for p in ("/opt/rocm/.info/version",):
                try:
                    with open(p) as f:
                        rocm_version = _version_tuple(f.read())
                except OSError:
                    pass
    return HostFacts(system=platform.system(), machine=platform.machine(), nvidia_smi=nvidia,
                     cuda_driver=cuda, gpus=gpus, rocm=rocm, rocm_version=rocm_version,
                     python=sys.version_info[:2])
