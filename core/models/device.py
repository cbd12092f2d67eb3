"""Device and dtype policy: one pure decision function, plus a probe of the real hardware.

The decision is separated from the probing so that every branch (CUDA, MPS, CPUs with and without
bf16 support) is tested on any machine.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
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
    cxx_compiler: str = ""        # path of a C++ compiler (torch.compile's CPU code needs one)
    triton: bool = False          # triton importable (torch.compile's GPU code needs it)


@dataclass(frozen=True)
class DevicePolicy:
    device: str                   # "cuda", "mps" or "cpu"
    dtype: str                    # dtype of UNet and text encoder
    vae_dtype: str                # dtype of the SD VAE
    upscaler_vae_dtype: str       # the x4 VAE overflows in half precision: always decoded in fp32
    reason: str
    compile: bool = False         # compile the UNet with torch.compile (core/models/unet_compile.py)
    compile_reason: str = ""
    vae_channels_last: bool = False   # the autoencoders' weights in channels_last (``VAE_CHANNELS_LAST``)
    blocked_attention: bool = False   # attention by core/models/blocked_attention.py (``BLOCKED_ATTENTION``)

    @property
    def half(self) -> bool:
        return self.dtype != "float32"


# Devices where the autoencoders' convolutions run with channels_last weights (their activations follow).
# Measured on the CPU (2-core EPYC, avx512_bf16, 512², bf16): the tiny autoencoder encodes 1.4-1.5x and
# decodes 1.4-1.5x faster, SD2's VAE 1.15-1.2x.  Not on CUDA or MPS: unmeasured there.  The UNet stays
# contiguous: channels_last measured within the noise for it (README, row 1).
VAE_CHANNELS_LAST = ("cpu",)
# (device, dtype) pairs whose attention layers compute attention block by block
# (core/models/blocked_attention.py) instead of torch's scaled_dot_product_attention, on CPUs without
# AMX.  Measured on a 2-core EPYC (avx512_bf16, no AMX) in bf16: attention 1.4-2x faster
# (scripts/bench_attention.py), the 512² UNet step 6.19 -> 4.64 s eager and 5.21 -> 4.12 s compiled
# (row 1).  Not in fp32 (torch's kernel measured 1.1-1.5x faster there), not with AMX (torch's kernel
# then runs on AMX tiles: attention measured 16% of the step on an AMX Xeon, against 36% here), not on
# CUDA or MPS (their fused kernels are the fast path).
BLOCKED_ATTENTION = (("cpu", "bfloat16"),)
BLOCKED_ATTENTION_NOT_WITH = "amx_bf16"


def choose_policy(facts: HardwareFacts, device: str | None = None, dtype: str | None = None,
                  compile: bool = False) -> DevicePolicy:
    """Pick device and dtypes.  ``device``/``dtype`` override the automatic choice; ``compile`` asks
    for the compiled UNet, which is granted where torch.compile can work (see ``compile_decision``).

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
    on, compile_why = compile_decision(facts, device, compile)
    return DevicePolicy(device, auto, vae, "float32", why, on, compile_why, vae_channels_last=device in VAE_CHANNELS_LAST,
                        blocked_attention=blocked_attention(facts, device, auto))


def blocked_attention(facts: HardwareFacts, device: str, dtype: str) -> bool:
    """Whether attention is computed block by block (``BLOCKED_ATTENTION``)."""
    return (device, dtype) in BLOCKED_ATTENTION and BLOCKED_ATTENTION_NOT_WITH not in facts.cpu_flags


def compile_decision(facts: HardwareFacts, device: str, wanted: bool) -> tuple[bool, str]:
    """Whether the UNet is compiled, and why ("" when not asked for).  The engine asks for it unless told
    not to (``engine_wants_compile``); in-process callers (the command line, tests) only when asked.  The
    first job of every new latent shape waits for nothing: it runs eagerly, and the shape compiles once
    the engine is idle (``core/models/compile_gate.py``).

    - CPU: inductor writes C++ and needs a compiler (g++/clang++, or MSVC's cl on Windows);
    - CUDA/ROCm: inductor writes triton kernels and needs triton;
    - Apple MPS: never (inductor's MPS backend is experimental).
    """
    if not wanted:
        return False, ""
    if device == "mps":
        return False, "asked for, but torch.compile is not used on Apple MPS"
    if device == "cuda" and not facts.triton:
        return False, "asked for, but triton is not installed (torch.compile needs it on the GPU)"
    if device == "cpu" and not facts.cxx_compiler:
        return False, "asked for, but no C++ compiler was found (torch.compile needs one on the CPU)"
    backend = "triton" if device == "cuda" else facts.cxx_compiler
    return True, f"torch.compile with inductor ({backend}), weights frozen"


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
                         ram=total_ram(), cxx_compiler=cxx_compiler(),
                         triton=importlib.util.find_spec("triton") is not None)


def cxx_compiler() -> str:
    """The C++ compiler inductor would use: $CXX, else the usual names on PATH ("" when none)."""
    names = [os.environ.get("CXX", "")] + (["cl"] if platform.system() == "Windows" else []) + ["g++", "clang++", "c++"]
    return next((path for path in map(shutil.which, filter(None, names)) if path), "")


YES, NO = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def wants_compile(value: str | None = None, default: bool = False) -> bool:
    """DD_COMPILE (or ``value``) read as a yes/no (1, true, yes, on / 0, false, no, off); ``default``
    when it is unset, empty or neither."""
    value = (os.environ.get("DD_COMPILE", "") if value is None else value).strip().lower()
    return True if value in YES else False if value in NO else default


def engine_wants_compile(flag: bool | None) -> bool:
    """The engine compiles its UNets unless told not to: ``flag`` (``--compile`` / ``--no-compile``, the
    dock's setting) when given, else DD_COMPILE, else yes.  Granted only where it can work
    (``compile_decision``)."""
    return flag if flag is not None else wants_compile(default=True)


def torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def current_policy() -> DevicePolicy:
    """The policy for this machine, honouring DD_DEVICE / DD_DTYPE / DD_COMPILE."""
    return choose_policy(probe(), os.environ.get("DD_DEVICE") or None, os.environ.get("DD_DTYPE") or None,
                         compile=wants_compile())
