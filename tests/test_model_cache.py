"""The model cache: identical components shared across models, unloading under memory pressure,
out-of-memory retries, and the fingerprints that decide what is identical (real tiny pipelines)."""

import os
import shutil

import pytest

from core.models import memory
from core.models.manager import ModelManager
from core.models.weights import FingerprintCache, estimate_weight_bytes
from core.pipelines import run_job

from .helpers import inpaint_request, rect_mask, rgba_u8

IMG = rgba_u8(64, 80, seed=5)
MASK = rect_mask(64, 80, 20, 16, 60, 48)


def copy_model(src, dst):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".tok"))
    return dst


def perturb_weights(folder):
    """Change one tensor of a component's safetensors file (same shapes, other values)."""
    from safetensors.numpy import load_file, save_file

    path = folder / "diffusion_pytorch_model.safetensors"
    tensors = load_file(str(path))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 0.001
    save_file(tensors, str(path))


@pytest.fixture(scope="module")
def family(tiny_root, tmp_path_factory):
    """Model folders: gen (2-1-base), inp (inpainting with gen's text encoder, tokenizer and VAE files),
    inp_vae (the same but another VAE), x4 (the upscaler, whose VAE has another architecture)."""
    root = tmp_path_factory.mktemp("family")
    gen = copy_model(tiny_root / "sd2-1-base", root / "gen")
    inp = copy_model(tiny_root / "sd2-inpainting", root / "inp")
    for comp in ("text_encoder", "tokenizer", "vae"):
        shutil.rmtree(inp / comp)
        shutil.copytree(gen / comp, inp / comp)
    inp_vae = copy_model(inp, root / "inp_vae")
    perturb_weights(inp_vae / "vae")
    x4 = copy_model(tiny_root / "sd2-x4-upscaler", root / "x4")
    return {"gen": gen, "inp": inp, "inp_vae": inp_vae, "x4": x4}


def manager(policy, tmp_path, **kw):
    return ModelManager(policy, models_dir=tmp_path / "none", hub_cache=tmp_path / "no-hub",
                        fingerprints=FingerprintCache(tmp_path / "fp.json"), capacity=kw.pop("capacity", 8), **kw)


def test_identical_components_are_loaded_once_and_shared(family, policy, tmp_path):
    statuses = []
    m = manager(policy, tmp_path, on_status=statuses.append)
    a = m.get("generate", str(family["gen"]))
    b = m.get("inpaint", str(family["inp"]))
    assert b.pipe.text_encoder is a.pipe.text_encoder
    assert b.pipe.tokenizer is a.pipe.tokenizer
    assert b.pipe.vae is a.pipe.vae
    assert b.pipe.unet is not a.pipe.unet
    assert a.shared == () and b.shared == ("text_encoder", "tokenizer", "vae")
    assert m.loads == 2
    loaded = [s for s in statuses if s["state"] == "loaded"]
    assert [s["shared"] for s in loaded] == [[], ["text_encoder", "tokenizer", "vae"]]


def test_a_different_vae_is_not_shared_but_the_text_encoder_is(family, policy, tmp_path):
    m = manager(policy, tmp_path)
    a = m.get("generate", str(family["gen"]))
    c = m.get("inpaint", str(family["inp_vae"]))
    assert c.pipe.vae is not a.pipe.vae
    assert c.pipe.text_encoder is a.pipe.text_encoder
    # the perturbed VAE really is the perturbed one
    import torch

    pa = dict(a.pipe.vae.named_parameters())
    pc = dict(c.pipe.vae.named_parameters())
    assert any(not torch.equal(pa[k], pc[k]) for k in pa)


def test_the_upscaler_vae_is_never_shared_with_the_sd_vae(family, policy, tmp_path):
    m = manager(policy, tmp_path)
    a = m.get("generate", str(family["gen"]))
    u = m.get("upscale", str(family["x4"]))
    assert u.pipe.vae is not a.pipe.vae
    assert type(u.pipe.vae.encoder.down_blocks) is type(a.pipe.vae.encoder.down_blocks)
    assert len(u.pipe.vae.encoder.down_blocks) != len(a.pipe.vae.encoder.down_blocks)


def test_sharing_does_not_change_results(family, policy, tmp_path):
    shared = manager(policy, tmp_path / "s")
    shared.get("generate", str(family["gen"]))
    alone = manager(policy, tmp_path / "a")
    req = inpaint_request(IMG, MASK, steps=2, seed=3)
    from dataclasses import replace

    req = replace(req, model=str(family["inp"]))
    r1 = run_job(req, shared)
    r2 = run_job(req, alone)
    assert shared.loaded()[-1].shared and not alone.loaded()[-1].shared
    assert r1.patches[0].image.data == r2.patches[0].image.data


def test_shared_components_outlive_the_pipeline_that_loaded_them(family, policy, tmp_path):
    m = manager(policy, tmp_path, capacity=2)
    a = m.get("generate", str(family["gen"]))
    m.get("inpaint", str(family["inp"]))
    te = a.pipe.text_encoder
    m.get("upscale", str(family["x4"]))  # capacity 2: gen is unloaded, inp still holds the shared parts
    keys = [lm.resolved.path.name for lm in m.loaded()]
    assert keys == ["inp", "x4"]
    again = m.get("generate", str(family["gen"]))  # loads gen again, reusing what inp still holds
    assert again.pipe.text_encoder is te


def param_bytes(pipe) -> int:
    total = 0
    for name in ("unet", "text_encoder", "vae", "depth_estimator"):
        mod = getattr(pipe, name, None)
        if mod is not None:
            total += sum(p.numel() * p.element_size() for p in mod.parameters())
            total += sum(b.numel() * b.element_size() for b in mod.buffers())
    return total


def test_weight_estimate_matches_the_loaded_pipeline(family, policy, tmp_path):
    m = manager(policy, tmp_path)
    for key, mode in (("gen", "generate"), ("x4", "upscale")):
        lm = m.get(mode, str(family[key]))
        est = estimate_weight_bytes(lm.resolved, policy)
        real = param_bytes(lm.pipe)
        assert abs(est - real) <= 0.1 * real, (key, est, real)


def test_memory_pressure_unloads_the_oldest_instead_of_failing(family, policy, tmp_path):
    """A machine whose memory fits about one tiny model: every load first makes room."""
    budget = {}
    m = None

    def available():
        used = sum(param_bytes(lm.pipe) for lm in m.loaded())
        return budget["total"] - used

    statuses = []
    m = manager(policy, tmp_path, available_memory=available, reserve=0, on_status=statuses.append)
    gen_size = estimate_weight_bytes(m.resolve("generate", str(family["gen"])), policy)
    budget["total"] = int(gen_size * 1.5)
    m.get("generate", str(family["gen"]))
    m.get("inpaint", str(family["inp_vae"]))
    assert [lm.resolved.path.name for lm in m.loaded()] == ["inp_vae"]
    m.get("generate", str(family["gen"]))
    assert [lm.resolved.path.name for lm in m.loaded()] == ["gen"]
    assert [(s["path"].rsplit("/", 1)[-1], s["state"]) for s in statuses if s["state"] != "loading"] == [
        ("gen", "loaded"), ("gen", "unloaded"), ("inp_vae", "loaded"), ("inp_vae", "unloaded"), ("gen", "loaded")]


def test_out_of_memory_while_loading_unloads_everything_and_retries_once(family, policy, tmp_path, monkeypatch):
    import torch

    from core.models import loader

    real = loader.load_pipeline
    calls = []

    def allocator_fails_once(*args, **kw):
        calls.append(args[0].path.name)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kw)

    m = manager(policy, tmp_path)
    m.get("generate", str(family["gen"]))
    monkeypatch.setattr(loader, "load_pipeline", allocator_fails_once)
    b = m.get("inpaint", str(family["inp"]))
    assert calls == ["inp", "inp"]
    assert [lm.resolved.path.name for lm in m.loaded()] == ["inp"]
    assert b.shared == ()  # everything was unloaded before the retry

    def always_fails(*args, **kw):
        raise MemoryError()

    monkeypatch.setattr(loader, "load_pipeline", always_fails)
    with pytest.raises(memory.OutOfMemory, match="not enough memory to load"):
        m.get("upscale", str(family["x4"]))


def test_out_of_memory_during_a_job_retries_once_with_models_unloaded(family, policy, tmp_path):
    m = manager(policy, tmp_path)
    m.get("generate", str(family["gen"]))
    attempts = []

    def job():
        attempts.append(len(m.loaded()))
        if len(attempts) == 1:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 123 bytes")
        return "ok"

    assert memory.run_with_memory_retry(job, m) == "ok"
    assert attempts == [1, 0]

    def never():
        raise RuntimeError("CUDA out of memory")

    with pytest.raises(memory.OutOfMemory, match="smaller selection"):
        memory.run_with_memory_retry(never, m)
    with pytest.raises(ValueError):  # other errors pass through untouched, no retry
        memory.run_with_memory_retry(lambda: (_ for _ in ()).throw(ValueError("x")), m)


def test_out_of_memory_is_recognised_through_chained_exceptions():
    try:
        try:
            raise MemoryError()
        except MemoryError as e:
            raise ValueError("wrapped") from e
    except ValueError as outer:
        assert memory.is_out_of_memory(outer)
    assert not memory.is_out_of_memory(RuntimeError("shape mismatch"))


def test_fingerprints_use_the_hf_blob_hash_without_reading(tmp_path):
    blob_name = "ab" * 32
    blobs = tmp_path / "models--org--m" / "blobs"
    blobs.mkdir(parents=True)
    (blobs / blob_name).write_bytes(b"content whose sha256 is not the name")
    snap = tmp_path / "models--org--m" / "snapshots" / "rev" / "vae"
    snap.mkdir(parents=True)
    (snap / "diffusion_pytorch_model.safetensors").symlink_to(blobs / blob_name)
    fc = FingerprintCache(tmp_path / "fp.json")
    assert fc.file_hash(snap / "diffusion_pytorch_model.safetensors") == blob_name


def test_fingerprints_are_remembered_by_size_and_mtime(tmp_path):
    f = tmp_path / "w.safetensors"
    f.write_bytes(b"a" * 100)
    fc = FingerprintCache(tmp_path / "fp.json")
    h1 = fc.file_hash(f)
    st = f.stat()
    f.write_bytes(b"b" * 100)                      # same size; put the old mtime back
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert FingerprintCache(tmp_path / "fp.json").file_hash(f) == h1  # from the saved cache, not re-read
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert FingerprintCache(tmp_path / "fp.json").file_hash(f) != h1


def test_component_fingerprint_sees_configs_and_weights(family, tmp_path):
    fc = FingerprintCache(None)
    gen, inp, inp_vae = family["gen"], family["inp"], family["inp_vae"]
    assert fc.component(gen / "vae", None) == fc.component(inp / "vae", None)
    assert fc.component(gen / "vae", None) != fc.component(inp_vae / "vae", None)
    assert fc.component(gen / "tokenizer", None) == fc.component(inp / "tokenizer", None)
    assert fc.component(gen / "unet", None) != fc.component(inp / "unet", None)
    assert fc.component(tmp_path / "missing", None) is None
    assert len(fc.component(gen / "vae", None)) == 64
