"""Row 9: expanding costs about what inpainting the same area costs.  The time to add ``expand_px`` px on
the right of a W×H image (the whole job: reading the request, the pre-fill, every pass, the patch),
against inpainting a selection of that size: the strip at the right edge of the grown canvas, the same
pixels to paint, with the same prompt, steps and strength.  The ratio of the two is the figure.

Both jobs do all of their work each time (the prompt and VAE caches are cleared) and are timed in
every round, in alternating order (a machine slowing down or speeding up during the row favours
neither); the best of the rounds counts.  What each job gave the model is recorded (passes, windows,
model sizes, UNet and VAE time), so a ratio far from 1 says where it comes from."""

from __future__ import annotations

from .common import Row, clear_job_caches, fmt_s, n_steps, noise_image, now, watching
from .profiles import Profile

PROMPT = "a stone wall with ivy"
STRENGTH = 0.8        # the dock's default for both modes


def requests(profile: Profile):
    """(expand request, inpaint request) of the row."""
    import numpy as np

    from ...contract.jobs import ImageBuffer, JobRequest, Options, Params

    w, h = profile.expand_size
    g = profile.expand_px
    params = Params(prompt=PROMPT, negative_prompt="blurry", steps=profile.expand_steps, guidance=7.5,
                    strength=STRENGTH, seed=1)
    wide = noise_image(w + g, h, seed=9)
    image = np.ascontiguousarray(wide[:, :w])
    expand = JobRequest("expand", params, Options(expand_right=g), image=ImageBuffer(w, h, "BGRA_U8", image.tobytes()))
    mask = np.zeros((h, w + g), np.uint8)
    mask[:, w:] = 255
    inpaint = JobRequest("inpaint", params, Options(), image=ImageBuffer(w + g, h, "BGRA_U8", wide.tobytes()),
                         mask=ImageBuffer(w + g, h, "GRAY_U8", mask.tobytes()))
    return expand, inpaint


def run(profile: Profile, models, log) -> Row:
    from ...contract.jobcontrol import JobControl
    from ...contract.jobs import validate
    from ...pipelines import run_job

    pipe = models.get("inpaint").pipe
    expand, inpaint = requests(profile)
    jobs = {"expand": expand, "inpaint": inpaint}
    best: dict[str, dict] = {}
    for rnd in range(profile.expand_rounds):
        for name in (("expand", "inpaint") if rnd % 2 == 0 else ("inpaint", "expand")):
            clear_job_caches()
            with watching(pipe) as timer:
                t0 = now()
                res = run_job(validate(jobs[name]), models, JobControl())
                total = now() - t0
            seen = {"total_s": total, "unet_s": timer.total("unet"), "unet_calls": timer.count("unet"),
                    "vae_encode_s": timer.total("vae_encode"), "vae_encodes": timer.count("vae_encode"),
                    "vae_decode_s": timer.total("vae_decode"), "region": res.timings.get("region"),
                    "model_sizes": res.timings.get("model_sizes") or [res.timings.get("model_size")],
                    "passes": res.timings.get("passes", 1), "windows": res.timings.get("windows")}
            log(f"row 9: {name} round {rnd + 1}: {fmt_s(total)} ({seen['passes']} pass(es), model "
                f"{seen['model_sizes']})")
            all_s = [*(best[name]["all_s"] if name in best else []), total]
            if name not in best or total < best[name]["total_s"]:
                best[name] = seen
            best[name]["all_s"] = all_s
    e, i = best["expand"], best["inpaint"]
    ratio = e["total_s"] / i["total_s"]
    (w, h), g = profile.expand_size, profile.expand_px
    other = e["total_s"] - e["unet_s"] - e["vae_encode_s"] - e["vae_decode_s"]
    row = Row(9, f"Expand costs about an inpaint of its size ({g} px beside {w}×{h}, {n_steps(profile.expand_steps)})",
              f"expand {fmt_s(e['total_s'])} vs inpaint of the {g}×{h} strip {fmt_s(i['total_s'])} = **{ratio:.2f}×**; "
              f"{e['passes']} pass(es), model {e['model_sizes']} vs {i['model_sizes']}",
              "≤ 1.25×", ratio <= 1.25,
              {"expand": e, "inpaint": i, "ratio": ratio, "size": [w, h], "expand_px": g, "steps": profile.expand_steps,
               "strength": STRENGTH})
    for name, v in (("expand", e), ("inpaint", i)):
        row.notes.append(f"{name}: UNet {fmt_s(v['unet_s'])} in {v['unet_calls']} calls, VAE encode "
                         f"{fmt_s(v['vae_encode_s'])} ({v['vae_encodes']}), decode {fmt_s(v['vae_decode_s'])}; region "
                         f"{v['region']}")
    row.notes.append(f"expand outside the model (pre-fill, colour match, blending, patch): {fmt_s(other)}")
    return row
