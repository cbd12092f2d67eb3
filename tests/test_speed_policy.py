"""The decisions of the speed policy, each tested (timing lives in ``python -m core.devtools.bench``, never here):
guidance 1 skips the doubled batch, prompt embeddings and VAE encodes are reused across jobs, an
inpaint at strength 1 never encodes the start image it does not use."""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import pytest
import torch

from core.contract.jobcontrol import JobControl
from core.contract.jobs import JobRequest, Options, Params
from core.models import latent_cache
from core.pipelines import prompts, run_job
from tests.helpers import buffer, inpaint_request, rect_mask, rgba_u8


class Calls:
    """Batch sizes of every forward call of a module (a forward pre-hook)."""

    def __init__(self, module):
        self.batches: list[int] = []
        self._h = module.register_forward_pre_hook(self._pre, with_kwargs=True)

    def _pre(self, _m, args, kwargs):
        x = args[0] if args else next(iter(kwargs.values()))
        self.batches.append(int(x.shape[0]))

    def __len__(self):
        return len(self.batches)

    def close(self):
        self._h.remove()


@pytest.fixture(autouse=True)
def fresh_caches():
    prompts.clear_cache()
    latent_cache.clear()
    yield


def request_for(mode: str, guidance: float, num_images: int = 1) -> JobRequest:
    img = rgba_u8(96, 96, seed=3)
    mask = rect_mask(96, 96, 24, 24, 72, 72)
    params = Params(prompt="a red ball", negative_prompt="blur", steps=2, seed=5, strength=1.0 if mode == "inpaint"
                    else 0.9, guidance=guidance, num_images=num_images)
    if mode == "upscale":
        return JobRequest("upscale", replace(params, num_images=1), Options(tile=64), image=buffer(img[:32, :32]))
    if mode == "generate":
        return JobRequest("generate", params, Options(width=96, height=96))
    return JobRequest(mode, params, Options(depth_source="auto"), image=buffer(img), mask=buffer(mask, "GRAY_U8"))


PIPE_MODE = {"inpaint": "inpaint", "restyle": "restyle", "upscale": "upscale", "generate": "generate"}


@pytest.mark.parametrize("mode", ["inpaint", "restyle", "upscale", "generate"])
@pytest.mark.parametrize("num_images", [1, 2])
def test_guidance_1_skips_the_doubled_batch(models, mode, num_images):
    kwargs = {"without_depth_estimator": True} if mode == "restyle" else {}
    pipe = models.get(PIPE_MODE[mode], **kwargs).pipe
    n = 1 if mode == "upscale" else num_images
    calls = Calls(pipe.unet)
    try:
        run_job(request_for(mode, 1.0, num_images), models)
        plain = list(calls.batches)
        calls.batches.clear()
        run_job(request_for(mode, 7.5, num_images), models)
        guided = list(calls.batches)
    finally:
        calls.close()
    assert plain and set(plain) == {n}, plain          # guidance 1: one row per image
    assert guided and set(guided) == {2 * n}, guided   # guidance > 1: conditional + unconditional


def test_guidance_1_encodes_no_negative_prompt(models):
    pipe = models.get("inpaint").pipe
    te = Calls(pipe.text_encoder)
    try:
        run_job(request_for("inpaint", 1.0), models)
    finally:
        te.close()
    assert len(te) == 1  # the prompt only


def test_prompt_embeddings_are_reused_across_jobs_on_the_engine_path(models):
    """Jobs executed by the engine's own dispatcher share the prompt cache while the model stays loaded."""
    from core.engine.jobqueue import Job
    from core.engine.service import EngineService

    service = EngineService(models=models, warm_up=False)
    pipe = models.get("inpaint").pipe
    te = Calls(pipe.text_encoder)
    try:
        def execute(i, req):
            outcome = service._execute(Job(f"j{i}", req, control=JobControl()), "cpu")
            assert outcome.kind == "result", outcome
            return len(te)

        first = execute(1, request_for("inpaint", 7.5))
        again = execute(2, replace(request_for("inpaint", 7.5), params=replace(request_for("inpaint", 7.5).params,
                                                                                 seed=99)))
        other = execute(3, replace(request_for("inpaint", 7.5), params=replace(request_for("inpaint", 7.5).params,
                                                                                 prompt="a blue cube")))
    finally:
        te.close()
        service.close()
    assert first == 2              # prompt and negative prompt: a miss
    assert again == first          # same prompt, other seed: a hit, the text encoder never runs
    assert other == first + 2      # another prompt: a miss


def test_vae_encodes_are_reused_across_jobs_with_the_same_pixels(models):
    pipe = models.get("inpaint").pipe
    enc = Calls(pipe.vae.encoder)
    img = rgba_u8(96, 96, seed=3)
    mask = rect_mask(96, 96, 24, 24, 72, 72)
    try:
        a = run_job(inpaint_request(img, mask, seed=1), models)
        after_first = len(enc)
        b = run_job(inpaint_request(img, mask, seed=2, prompt="something else"), models)
        after_repeat = len(enc)
        moved = mask.copy()
        moved[30:40, 10:20] = 255
        run_job(inpaint_request(img, moved, seed=1), models)
        after_new_selection = len(enc)
        other = img.copy()
        other[0, 0, 0] ^= 1   # one bit of one pixel
        run_job(inpaint_request(other, mask, seed=1), models)
        after_new_pixels = len(enc)
    finally:
        enc.close()
    assert after_first == 1                         # strength 1: only the masked image is encoded
    assert after_repeat == after_first              # hit: same pixels, same selection
    assert after_new_selection == after_first + 1   # the masked image changed: miss
    assert after_new_pixels == after_new_selection + 1  # one bit differs: miss
    assert a.patches[0].image.data != b.patches[0].image.data  # the repeat really ran (new seed, prompt)


def test_a_cached_encode_gives_exactly_the_latents_of_a_fresh_one(models):
    from core.pipelines.common import encode_image

    pipe = models.get("inpaint").pipe
    rgb = np.random.default_rng(0).random((64, 64, 3), dtype=np.float32)
    first = encode_image(pipe, rgb)
    hits = latent_cache.stats["hits"]
    second = encode_image(pipe, rgb)
    assert latent_cache.stats["hits"] == hits + 1
    assert torch.equal(first, second)
    latent_cache.clear()
    assert torch.equal(encode_image(pipe, rgb), first)


def test_the_vae_encode_cache_is_a_bounded_lru_per_vae_and_dtype():
    class FakeVAE(torch.nn.Module):
        """Stands in for a VAE: counts encodes, returns parameters derived from the input."""

        def __init__(self):
            super().__init__()
            self.calls = 0

        @property
        def dtype(self):
            return torch.float32

    vae = FakeVAE()

    def encode(x):
        vae.calls += 1
        return torch.cat([x.mean(1, keepdim=True)] * 8, 1)

    xs = [torch.full((1, 3, 8, 8), float(i)) for i in range(latent_cache.MAX_ENTRIES + 1)]
    for x in xs:
        latent_cache.posterior(vae, x, encode)
    assert vae.calls == len(xs) and latent_cache.entries(vae) == latent_cache.MAX_ENTRIES
    latent_cache.posterior(vae, xs[-1], encode)            # the newest: still there
    assert vae.calls == len(xs)
    latent_cache.posterior(vae, xs[0], encode)             # the oldest was evicted
    assert vae.calls == len(xs) + 1
    latent_cache.posterior(vae, xs[1].to(torch.float64), encode)  # same values, other dtype: a miss
    assert vae.calls == len(xs) + 2
    other = FakeVAE()
    latent_cache.posterior(other, xs[-1], encode)          # another VAE: its own entries
    assert vae.calls == len(xs) + 3
    out = latent_cache.posterior(vae, xs[-1], encode)
    out.add_(1.0)                                         # the caller's copy: the cache is untouched
    assert torch.equal(latent_cache.posterior(vae, xs[-1], encode), encode(xs[-1]))
    del other
    import gc

    gc.collect()
    assert len(latent_cache._caches) == 1                  # an unloaded VAE takes its entries with it


def test_the_cache_is_bounded_in_bytes_too(monkeypatch):
    monkeypatch.setattr(latent_cache, "MAX_BYTES", 3 * 8 * 8 * 8 * 4)
    vae = torch.nn.Linear(1, 1)
    for i in range(5):
        latent_cache.posterior(vae, torch.full((1, 3, 8, 8), float(i)), lambda x: torch.zeros(1, 8, 8, 8))
    assert latent_cache.entries(vae) == 3


def test_restyle_reuses_the_encode_of_the_same_pixels(models):
    pipe = models.get("restyle", without_depth_estimator=True).pipe
    enc = Calls(pipe.vae.encoder)
    img = rgba_u8(96, 96, seed=4)
    depth = np.tile(np.linspace(0, 255, 96, dtype=np.uint8), (96, 1))[..., None]
    req = JobRequest("restyle", Params(prompt="x", steps=2, seed=1, strength=0.8),
                     Options(depth_source="given"), image=buffer(img), depth=buffer(depth, "GRAY_U8"))
    try:
        a = run_job(req, models)
        first = len(enc)
        b = run_job(req, models)
    finally:
        enc.close()
    assert first == 1 and len(enc) == 1
    assert a.patches[0].image.data == b.patches[0].image.data  # same seed: the very same result


@pytest.mark.parametrize("strength,encodes", [(1.0, 1), (0.8, 2)])
def test_inpaint_encodes_the_start_image_only_when_it_is_used(models, strength, encodes):
    pipe = models.get("inpaint").pipe
    enc = Calls(pipe.vae.encoder)
    try:
        run_job(inpaint_request(rgba_u8(96, 96, seed=8), rect_mask(96, 96, 20, 20, 60, 60), strength=strength),
                models)
    finally:
        enc.close()
    assert len(enc) == encodes


def test_skipping_the_unused_start_image_does_not_change_the_result(models):
    """At strength 1 the pipeline starts from pure noise: handing it the encoded start image (the old
    way) or not gives the very same pixels."""
    from core.contract.plan import plan_region_job
    from core.pipelines import inpaint as ip
    from core.pipelines import regionjob

    req = inpaint_request(rgba_u8(96, 96, seed=9), rect_mask(96, 96, 20, 20, 60, 60), strength=1.0, seed=4)
    loaded = models.get("inpaint")
    plan = plan_region_job(req, regionjob.selection_bbox(req), loaded.resolved.native, 4)
    work = regionjob.prepare(req, plan)
    skipped, _ = ip.denoise(loaded.pipe, plan, work, req.params, JobControl(), "cpu")
    encoded = ip.start_latents(loaded.pipe, plan, work, "original")
    old, _ = ip.denoise(loaded.pipe, plan, work, req.params, JobControl(), "cpu", encoded)
    assert np.array_equal(skipped[0], old[0])


def test_fp16_factory_models_load_every_part(tmp_path):
    """The benchmark's models are saved as the installer downloads them (fp16 files only); every part,
    the depth estimator included, loads from such a folder."""
    from core.devtools.tiny_models import build_all
    from core.models.manager import ModelManager

    build_all(tmp_path, kinds=("depth",), variant="fp16")
    assert not list(tmp_path.rglob("model.safetensors"))
    mm = ModelManager(models_dir=tmp_path, hub_cache=tmp_path / "none")
    part = mm.get_part("depth")
    assert part.pipe.depth_estimator.dtype == torch.float32
    assert mm.get("restyle", without_depth_estimator=True).resolved.variant == "fp16"


# --- memory: mmap'd safetensors, no dtype-cast copies kept -------------------------------------------

def mapped_files() -> set[str]:
    """Files mapped into this process (Linux /proc/self/maps)."""
    with open("/proc/self/maps") as f:
        return {parts[5].strip() for line in f if len(parts := line.split(None, 5)) == 6}


def model_tensors(pipe):
    for m in (pipe.unet, pipe.text_encoder, pipe.vae):
        yield from m.parameters()
        yield from m.buffers()


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux /proc")
def test_weights_in_the_files_dtype_stay_memory_mapped(tiny_root, tmp_path):
    """fp32 files under an fp32 policy: the UNet's weights are the file's pages (mmap), not a copy."""
    import gc

    from core.models.device import HardwareFacts, choose_policy
    from core.models.manager import ModelManager

    policy = choose_policy(HardwareFacts(), "cpu", "float32")
    mm = ModelManager(policy, models_dir=tiny_root, hub_cache=tmp_path / "none")
    pipe = mm.get("inpaint").pipe
    unet_file = str(tiny_root / "sd2-inpainting" / "unet" / "diffusion_pytorch_model.safetensors")
    assert unet_file in mapped_files()
    assert {t.dtype for t in model_tensors(pipe) if t.is_floating_point()} == {torch.float32}
    mm.unload_all()
    del pipe
    gc.collect()
    assert unet_file not in mapped_files()   # unloading lets go of the file's pages


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux /proc")
def test_a_dtype_cast_at_load_keeps_no_copy_of_the_files_tensors(tmp_path):
    """fp16 files (as downloaded) under a bf16 policy: every tensor is cast once, and neither the fp16
    tensors nor the file's mapping outlive the load."""
    import gc

    from core.devtools.tiny_models import build_all
    from core.models.device import HardwareFacts, choose_policy
    from core.models.manager import ModelManager

    build_all(tmp_path / "m", kinds=("inpaint",), variant="fp16")
    policy = choose_policy(HardwareFacts(cpu_flags=frozenset({"avx512_bf16"})), "cpu")
    assert policy.dtype == "bfloat16"
    mm = ModelManager(policy, models_dir=tmp_path / "m", hub_cache=tmp_path / "none")
    pipe = mm.get("inpaint").pipe
    gc.collect()
    assert {t.dtype for t in model_tensors(pipe) if t.is_floating_point()} == {torch.bfloat16}
    folder = str(tmp_path / "m" / "sd2-inpainting")
    assert not [f for f in mapped_files() if f.startswith(folder)]
    # fake tensors hold no memory: inductor keeps some (fp16 examples of its attention patterns) once
    # anything was compiled in this process
    from torch._subclasses.fake_tensor import FakeTensor

    fp16 = [o for o in gc.get_objects()
            if isinstance(o, torch.Tensor) and not isinstance(o, FakeTensor) and o.dtype == torch.float16]
    assert not fp16, [tuple(t.shape) for t in fp16[:5]]
