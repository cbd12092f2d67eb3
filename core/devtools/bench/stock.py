"""Row 2: a 512 inpaint by the engine against a plain ``StableDiffusionInpaintPipeline`` at its defaults
(fp32, called directly, same weights), with seconds per step and the fixed costs apart.  Row 8: the cost
of a step preview as a share of the step.  And the caches: the same job again (same pixels and
prompt, another seed) shows what the prompt and VAE-encode caches save."""

from __future__ import annotations

from .common import Row, clear_job_caches, fmt_s, inpaint_request, noise_image, now, square_mask, watching
from .profiles import Profile

PROMPT = "a stone wall with ivy"
NEGATIVE = "blurry"


def breakdown(timer, total: float) -> dict:
    """Seconds per part of a pipeline run from its module timers."""
    steps = timer.count("unet")
    span = timer.span("unet")
    parts = {
        "total_s": total,
        "text_encoding_s": timer.total("text_encoder"),
        "vae_encode_s": timer.total("vae_encode"),
        "vae_encodes": timer.count("vae_encode"),
        "denoising_s": span,
        "unet_calls": steps,
        "s_per_step": span / steps if steps else 0.0,
        "unet_batch": timer.shapes["unet"][0][0] if timer.shapes.get("unet") else 0,
        "vae_decode_s": timer.total("vae_decode"),
    }
    parts["other_s"] = total - parts["text_encoding_s"] - parts["vae_encode_s"] - span - parts["vae_decode_s"]
    return parts


class PreviewMeter:
    """Times every step preview the way the engine makes it: latent → RGB (the tiny autoencoder's
    decode when it is installed, else the projection), then the protocol message."""

    def __init__(self):
        self.times: list[float] = []

    def decoder(self, models):
        """The job's step decoder (``pipelines.preview.step_decoder``), timed."""
        from ...pipelines.preview import step_decoder

        decode = step_decoder(models)

        def timed(latent):
            t = now()
            rgb = decode(latent)
            self._pending = now() - t
            return rgb

        return timed

    def __enter__(self):
        self._pending = 0.0
        return self

    def on_preview(self, rgb) -> None:
        from ...link import protocol as P

        t = now()
        chunks = P.encode(P.preview("bench", rgb.shape[1], rgb.shape[0], rgb.tobytes()))
        sum(len(c) for c in chunks)
        self.times.append(self._pending + now() - t)
        self._pending = 0.0

    def __exit__(self, *exc):
        return None


def run_ours(models, req, log, label: str) -> tuple[dict, PreviewMeter, object]:
    from ...contract.jobcontrol import JobControl
    from ...pipelines import run_job

    pipe = models.get("inpaint").pipe
    with watching(pipe) as timer, PreviewMeter() as previews:
        control = JobControl(None, previews.on_preview)
        control.decode_preview = previews.decoder(models)
        t = now()
        res = run_job(req, models, control)
        total = now() - t
    parts = breakdown(timer, total)
    log(f"row 2: ours ({label}) {fmt_s(total)}: {parts['unet_calls']} steps at {fmt_s(parts['s_per_step'])}, "
        f"text {fmt_s(parts['text_encoding_s'])}, encode {fmt_s(parts['vae_encode_s'])} "
        f"({parts['vae_encodes']}×), decode {fmt_s(parts['vae_decode_s'])}")
    return parts, previews, res


def load_stock(resolved):
    import torch
    from diffusers import StableDiffusionInpaintPipeline

    kw = {"variant": resolved.variant} if resolved.variant else {}
    pipe = StableDiffusionInpaintPipeline.from_pretrained(str(resolved.path), dtype=torch.float32,
                                                          local_files_only=True, **kw)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_stock(pipe, pixels, mask, steps: int, log) -> dict:
    import torch
    from PIL import Image

    image = Image.fromarray(pixels[..., [2, 1, 0]])  # the layer is BGRA
    mask_image = Image.fromarray(mask)
    with watching(pipe) as timer:
        t = now()
        pipe(prompt=PROMPT, negative_prompt=NEGATIVE, image=image, mask_image=mask_image,
             num_inference_steps=steps, generator=torch.Generator().manual_seed(1))
        total = now() - t
    parts = breakdown(timer, total)
    log(f"row 2: stock {fmt_s(total)}: {parts['unet_calls']} UNet calls at {fmt_s(parts['s_per_step'])}, "
        f"text {fmt_s(parts['text_encoding_s'])}, encode {fmt_s(parts['vae_encode_s'])}, "
        f"decode {fmt_s(parts['vae_decode_s'])}")
    return parts


STOCK_STEPS = 50     # StableDiffusionInpaintPipeline's default num_inference_steps


def artist_time(ours: dict, stock: dict, steps: int) -> dict:
    """Time-to-result of a default job of ours (the catalogue's sampler and steps) and of stock diffusers at
    its defaults (50 PNDM steps), from the fixed costs and seconds per step measured at ``steps``."""
    from ...contract import catalog, samplers

    spec = catalog.CATALOG["sd2-inpainting"]
    stock_calls = STOCK_STEPS + (stock["unet_calls"] - steps)      # PNDM runs one UNet call more
    ours_fixed = ours["total_s"] - ours["denoising_s"]
    stock_fixed = stock["total_s"] - stock["denoising_s"]
    return {"ours_steps": spec.steps, "ours_sampler": samplers.label(spec.sampler),
            "ours_s": ours_fixed + spec.steps * ours["s_per_step"], "stock_steps": STOCK_STEPS,
            "stock_calls": stock_calls, "stock_s": stock_fixed + stock_calls * stock["s_per_step"],
            "projected": True}


def run(profile: Profile, models, log) -> tuple[Row, Row, dict]:
    size, steps = profile.size, profile.e2e_steps
    pixels = noise_image(size, size, seed=2)
    mask = square_mask(size, size, size // 2)
    req = inpaint_request(size, size, mask, steps=steps, pixels=pixels, prompt=PROMPT)
    loaded = models.get("inpaint")
    clear_job_caches()
    ours, previews, _ = run_ours(models, req, log, "first job")
    stock_pipe = load_stock(loaded.resolved)
    try:
        stock = run_stock(stock_pipe, pixels, mask, steps, log)
    finally:
        del stock_pipe
    from dataclasses import replace

    again_req = replace(req, params=replace(req.params, seed=2))
    again, _, _ = run_ours(models, again_req, log, "same pixels and prompt again, new seed")

    speedup = stock["total_s"] / ours["total_s"]
    row2 = Row(2, f"End to end against stock diffusers ({size} inpaint, {steps} steps)",
               f"ours {fmt_s(ours['total_s'])} ({fmt_s(ours['s_per_step'])}/step) vs stock "
               f"{fmt_s(stock['total_s'])} ({fmt_s(stock['s_per_step'])}/step) = **{speedup:.2f}× faster**",
               "≥ 2× faster", speedup >= 2.0, {"ours": ours, "stock": stock, "ours_repeat": again,
                                               "speedup": speedup, "size": size, "steps": steps})
    row2.notes.append(
        f"fixed costs, ours vs stock: text encoding {fmt_s(ours['text_encoding_s'])} vs "
        f"{fmt_s(stock['text_encoding_s'])}, VAE encode {fmt_s(ours['vae_encode_s'])} ({ours['vae_encodes']}×) vs "
        f"{fmt_s(stock['vae_encode_s'])} ({stock['vae_encodes']}×), decode {fmt_s(ours['vae_decode_s'])} vs "
        f"{fmt_s(stock['vae_decode_s'])}; engine-side rest {fmt_s(ours['other_s'])} vs {fmt_s(stock['other_s'])}; "
        f"stock runs {stock['unet_calls']} UNet calls for {steps} steps (PNDM), ours {ours['unet_calls']} (DPM++ 2M)")
    felt = artist_time(ours, stock, steps)
    speedup_felt = felt["stock_s"] / felt["ours_s"]
    row2.figures["default_settings"] = {**felt, "speedup": speedup_felt}
    row2.notes.append(
        f"the speed an artist feels, at each side's default settings: ours {felt['ours_steps']} steps of "
        f"{felt['ours_sampler']} = {fmt_s(felt['ours_s'])} against stock's {felt['stock_steps']} PNDM steps "
        f"({felt['stock_calls']} UNet calls) = {fmt_s(felt['stock_s'])}: **{speedup_felt:.2f}× faster** (goal ≥ 4×, at "
        f"equal published quality: README, Samplers); projected from this run's measured fixed costs and "
        f"seconds per step, not timed as whole jobs")
    row2.notes.append(f"the same job again (same pixels and prompt, new seed): {fmt_s(again['total_s'])} "
                      f"(text encoding {fmt_s(again['text_encoding_s'])}, VAE encode {fmt_s(again['vae_encode_s'])})")

    step = ours["s_per_step"]
    per_preview = sum(previews.times) / len(previews.times) if previews.times else 0.0
    share = per_preview / step if step else 0.0
    row8 = Row(8, "Previews are nearly free", f"{per_preview * 1000:.2f} ms per preview vs "
               f"{fmt_s(step)} per step = **{share * 100:.3f}%**", "< 1% of a step", bool(previews.times) and share < 0.01,
               {"preview_s": per_preview, "previews": len(previews.times), "step_s": step, "share": share})
    row8.notes.append("a preview is the latent → RGB projection (the tiny autoencoder's decode where it is installed) "
                      "plus its protocol message, timed inside the row 2 job")
    policy = {
        "prompt_cache": {"miss_s": ours["text_encoding_s"], "hit_s": again["text_encoding_s"],
                         "saved_s": ours["text_encoding_s"] - again["text_encoding_s"],
                         "job_s": ours["total_s"]},
        "vae_cache": {"miss_s": ours["vae_encode_s"], "hit_s": again["vae_encode_s"],
                      "saved_s": ours["vae_encode_s"] - again["vae_encode_s"], "job_s": ours["total_s"]},
        "strength1_skip": {"encodes_now": ours["vae_encodes"], "encode_s": ours["vae_encode_s"] / max(1, ours["vae_encodes"]),
                           "job_s": ours["total_s"]},
    }
    return row2, row8, policy
