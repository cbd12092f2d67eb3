"""The machine a benchmark runs on, and process memory (Linux /proc, with portable fallbacks)."""

from __future__ import annotations

import os
import platform
import time

from ...models.device import BF16_CPU_FLAGS, cpu_flags, total_ram

# CPU flags that matter for the dtype policy and matmul speed.
RELEVANT_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",
                  "avx512_vnni", "avx_vnni")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def facts() -> dict:
    """CPU model, relevant flags, cores, RAM, OS, library versions (torch is imported here)."""
    import importlib.metadata as md

    flags = cpu_flags()
    versions = {}
    for pkg in ("torch", "diffusers", "transformers", "numpy", "opencv-python-headless", "safetensors", "compel"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    import torch

    return {
        "cpu": cpu_model(),
        "flags": [f for f in RELEVANT_FLAGS if f in flags],
        "bf16_capable": bool(flags & set(BF16_CPU_FLAGS)),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "ram_gib": round(total_ram() / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": versions,
        "when": time.strftime("%Y-%m-%d %H:%M %Z"),
    }


def describe(m: dict) -> str:
    v = m["versions"]
    return (f"{m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads), {m['ram_gib']} GiB RAM, "
            f"flags {' '.join(m['flags']) or 'none of note'}; {m['os']}, Python {m['python']}, "
            f"torch {v['torch']}, diffusers {v['diffusers']}, transformers {v['transformers']}, numpy {v['numpy']}")


# --- process memory ---------------------------------------------------------------------------------

def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_bytes() -> int:
    """Resident set size now."""
    kib = _status_kib("VmRSS")
    if kib is not None:
        return kib * 1024
    import psutil

    return int(psutil.Process().memory_info().rss)


def peak_rss_bytes() -> int:
    """Highest resident set size since the start, or since the last ``reset_peak_rss()``."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def reset_peak_rss() -> bool:
    """Restart the peak from the current RSS (Linux: /proc/self/clear_refs); False where impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def release_freed_memory() -> None:
    """Give freed heap pages back to the OS (glibc keeps them otherwise), so RSS means what is in use."""
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
