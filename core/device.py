"""Device and dtype policy: one pure decision function, plus a probe of the real hardware.

The decision is separated from the probing so that every branch (CUDA, MPS, CPUs with and without
bf16 support) is tested on any machine.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class HardwareFacts:
    cuda: bool = False
    cuda_name: str = ""
    cuda_memory: int = 0          # bytes
    rocm: bool = False
    mps: bool = False
    cpu_flags: frozenset = field(default_factory=frozenset)
    cpu_name: str = ""
    ram: int = 0                  # bytes


@dataclass(frozen=True)
class DevicePolicy:
    device: str                   # "cuda", "mps" or "cpu"
    dtype: str                    # dtype of UNet and text encoder
    vae_dtype: str                # dtype of the SD VAE
    upscaler_vae_dtype: str       # the x4 VAE overflows in half precision: always decoded in fp32
    reason: str

    @property
    def half(self) -> bool:
        return self.dtype != "float32"


def choose_policy(facts: HardwareFacts, device: str | None = None, dtype: str | None = None) -> DevicePolicy:
    """Pick device and dtypes.  ``device``/``dtype`` override the automatic choice.

    - CUDA (and ROCm): fp16, the VAE in fp32 (SD2's VAE overflows in fp16 at high resolution);
    - Apple MPS: fp16;
    - CPU with avx512_bf16 or AMX: bf16 for weights and activations (about 2× fp32);
    - any other CPU: fp32 (fp16 matmuls are not supported there).
    """
    if device is None:
        device = "cuda" if facts.cuda else "mps" if facts.mps else "cpu"
    if device not in ("cuda", "mps", "cpu"):
        raise ValueError(f"device must be cuda, mps or cpu, got {device!r}")
    if device == "cuda" and not facts.cuda:
        raise ValueError("device 'cuda' was asked for but no CUDA/ROCm GPU was found")
    if device == "mps" and not facts.mps:
        raise ValueError("device 'mps' was asked for but Apple MPS is not available")
    if device == "cuda":
        auto, vae, why = "float16", "float32", f"CUDA GPU {facts.cuda_name}".strip()
    elif device == "mps":
        auto, vae, why = "float16", "float16", "Apple MPS"
    elif facts.cpu_flags & set(BF16_CPU_FLAGS):
        flags = ", ".join(sorted(facts.cpu_flags & set(BF16_CPU_FLAGS)))
        auto, vae, why = "bfloat16", "bfloat16", f"CPU with {flags}"
    else:
        auto, vae, why = "float32", "float32", "CPU without bf16 support"
    if dtype is not None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if device == "cpu" and dtype == "float16":
            raise ValueError("float16 is not supported on the CPU; use bfloat16 or float32")
        why += f", dtype {dtype} chosen by the user"
        auto = dtype
        vae = "float32" if (device == "cuda" or dtype == "float32") else dtype
    return DevicePolicy(device, auto, vae, "float32", why)


def cpu_flags() -> frozenset:
    """CPU feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def total_ram() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def probe() -> HardwareFacts:
    """Look at the real machine (imports torch)."""
    import torch

    cuda = torch.cuda.is_available()
    name, mem = "", 0
    if cuda:
        props = torch.cuda.get_device_properties(0)
        name, mem = props.name, int(props.total_memory)
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return HardwareFacts(cuda=cuda, cuda_name=name, cuda_memory=mem,
                         rocm=bool(getattr(torch.version, "hip", None)), mps=mps,
                         cpu_flags=cpu_flags(), cpu_name=platform.processor() or platform.machine(),
                         ram=total_ram())


def torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def current_policy() -> DevicePolicy:
    """The policy for this machine, honouring DD_DEVICE / DD_DTYPE overrides."""
    return choose_policy(probe(), os.environ.get("DD_DEVICE") or None, os.environ.get("DD_DTYPE") or None)
