"""The device/dtype policy: every branch decided without the hardware."""

import pytest

from core.models.device import HardwareFacts, choose_policy

AVX512BF16 = frozenset({"avx512f", "avx512_bf16"})
AMX = frozenset({"amx_bf16", "amx_tile"})
PLAIN = frozenset({"avx2", "fma"})


def test_cuda_fp16_with_fp32_vae():
    p = choose_policy(HardwareFacts(cuda=True, cuda_name="RTX", cpu_flags=AVX512BF16))
    assert (p.device, p.dtype, p.vae_dtype, p.upscaler_vae_dtype) == ("cuda", "float16", "float32", "float32")


def test_mps_fp16_and_x4_vae_fp32():
    p = choose_policy(HardwareFacts(mps=True))
    assert (p.device, p.dtype, p.vae_dtype, p.upscaler_vae_dtype) == ("mps", "float16", "float16", "float32")


@pytest.mark.parametrize("flags", [AVX512BF16, AMX])
def test_cpu_with_bf16_support(flags):
    p = choose_policy(HardwareFacts(cpu_flags=flags))
    assert (p.device, p.dtype, p.vae_dtype) == ("cpu", "bfloat16", "bfloat16")
    assert p.upscaler_vae_dtype == "float32"


def test_other_cpu_fp32():
    p = choose_policy(HardwareFacts(cpu_flags=PLAIN))
    assert (p.device, p.dtype, p.vae_dtype) == ("cpu", "float32", "float32")


def test_manual_overrides():
    assert choose_policy(HardwareFacts(cuda=True), device="cpu").device == "cpu"
    p = choose_policy(HardwareFacts(cpu_flags=AVX512BF16), dtype="float32")
    assert (p.dtype, p.vae_dtype) == ("float32", "float32")
    p = choose_policy(HardwareFacts(cuda=True), dtype="bfloat16")
    assert (p.dtype, p.vae_dtype) == ("bfloat16", "float32")
    with pytest.raises(ValueError, match="float16 is not supported on the CPU"):
        choose_policy(HardwareFacts(cpu_flags=AVX512BF16), dtype="float16")
    with pytest.raises(ValueError, match="no CUDA"):
        choose_policy(HardwareFacts(), device="cuda")
    with pytest.raises(ValueError):
        choose_policy(HardwareFacts(), dtype="int8")


def test_this_machine_is_probed(policy):
    from core.models.device import probe

    facts = probe()
    assert policy.device in ("cpu", "cuda", "mps")
    if not facts.cuda and not facts.mps and facts.cpu_flags & {"avx512_bf16", "amx_bf16"}:
        assert policy.dtype == "bfloat16"


# --- the compiled UNet: asked for, and granted only where torch.compile can work ----------------------

GPP = "/usr/bin/g++"


def test_compile_is_off_unless_asked_for():
    p = choose_policy(HardwareFacts(cpu_flags=AMX, cxx_compiler=GPP))
    assert (p.compile, p.compile_reason) == (False, "")


def test_compile_on_cpu_needs_a_cxx_compiler():
    p = choose_policy(HardwareFacts(cpu_flags=AMX, cxx_compiler=GPP), compile=True)
    assert p.compile and GPP in p.compile_reason and p.dtype == "bfloat16"
    p = choose_policy(HardwareFacts(cpu_flags=AMX), compile=True)
    assert not p.compile and "no C++ compiler" in p.compile_reason


def test_compile_on_cuda_needs_triton_and_never_on_mps():
    p = choose_policy(HardwareFacts(cuda=True, triton=True), compile=True)
    assert (p.device, p.compile) == ("cuda", True) and "triton" in p.compile_reason
    p = choose_policy(HardwareFacts(cuda=True, cxx_compiler=GPP), compile=True)
    assert not p.compile and "triton is not installed" in p.compile_reason
    p = choose_policy(HardwareFacts(mps=True, cxx_compiler=GPP, triton=True), compile=True)
    assert not p.compile and "MPS" in p.compile_reason
    # the CPU of a CUDA machine, chosen by hand, is judged as a CPU
    p = choose_policy(HardwareFacts(cuda=True, triton=True), device="cpu", compile=True)
    assert not p.compile and "C++" in p.compile_reason


@pytest.mark.parametrize("value, wanted", [("1", True), ("on", True), (" Yes ", True), ("true", True),
                                           ("", False), ("0", False), ("off", False), ("no", False)])
def test_dd_compile_values(value, wanted, monkeypatch):
    from core.models.device import wants_compile

    monkeypatch.setenv("DD_COMPILE", value)
    assert wants_compile() is wanted


def test_cxx_compiler_prefers_cxx_and_finds_none_on_an_empty_path(monkeypatch, tmp_path):
    from core.models.device import cxx_compiler

    fake = tmp_path / "my-c++"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CXX", "my-c++")
    assert cxx_compiler() == str(fake)
    monkeypatch.delenv("CXX")
    assert cxx_compiler() == ""


def test_the_autoencoders_run_channels_last_on_the_cpu_only():
    """Measured on the CPU only (the tiny autoencoder 1.4-1.5x, SD2's VAE 1.15-1.2x); elsewhere unchanged."""
    assert choose_policy(HardwareFacts(cpu_flags=AVX512BF16)).vae_channels_last
    assert choose_policy(HardwareFacts(cpu_flags=PLAIN)).vae_channels_last
    assert choose_policy(HardwareFacts(cuda=True), device="cpu").vae_channels_last
    assert not choose_policy(HardwareFacts(cuda=True)).vae_channels_last
    assert not choose_policy(HardwareFacts(mps=True)).vae_channels_last


def test_attention_is_blocked_for_bf16_on_the_cpu_only():
    """Measured faster in bf16 on a CPU without AMX (1.3-1.7x); torch's kernel stays for fp32, with AMX
    (it runs on AMX tiles there) and on GPUs."""
    assert choose_policy(HardwareFacts(cpu_flags=AVX512BF16)).blocked_attention
    assert not choose_policy(HardwareFacts(cpu_flags=PLAIN)).blocked_attention
    assert not choose_policy(HardwareFacts(cpu_flags=AVX512BF16), dtype="float32").blocked_attention
    assert choose_policy(HardwareFacts(cpu_flags=PLAIN), dtype="bfloat16").blocked_attention
    assert not choose_policy(HardwareFacts(cuda=True)).blocked_attention
    assert not choose_policy(HardwareFacts(mps=True)).blocked_attention
    assert not choose_policy(HardwareFacts(cpu_flags=AVX512BF16 | {"amx_tile", "amx_bf16"})).blocked_attention
