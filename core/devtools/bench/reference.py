"""Row 12: what a reference image costs.  Reference-only attention (``core/pipelines/reference.py``) runs the
UNet a second time at each step inside its window (the reference pass) and one more attention per ``attn1``
in the job's call, so it is measured as the ratio of a guided 512² inpaint step with it to the same step
without it, through the engine's own code (``reference.applied`` on the full-size inpainting UNet); FLOPs
from torch's counter on the meta device, time best of the profile's repeats."""

from __future__ import annotations

from types import SimpleNamespace

from .common import Row, best_of, fmt_s
from .profiles import Profile

GOAL_RATIO = 2.5   # one more UNet pass plus the extra attention: a little over twice a step


def _job(unet):
    """What ``reference.applied`` reads of a pipeline at each UNet call: one guided step of one."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler()
    scheduler.set_timesteps(20)
    return SimpleNamespace(unet=unet, scheduler=scheduler, _num_timesteps=1, do_classifier_free_guidance=True)


def _reference(size: int, dtype, device="cpu"):
    import torch

    from ...pipelines.reference import Reference

    latents = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(2)).to(device, dtype)
    return Reference(latents, 1.0, 0.0, 1.0, (0,))


def count_flops(config: dict, size: int) -> tuple[int, int]:
    """(FLOPs of a guided step, FLOPs of the same step with a reference), on the meta device."""
    import torch
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    from ...pipelines import reference
    from .unet import step_inputs_meta

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
    x, t, ctx = (v.to("meta") for v in step_inputs_meta(unet, 2, size))
    with torch.inference_mode(), FlopCounterMode(display=False) as plain:
        unet(x, t, encoder_hidden_states=ctx)
    job = _job(unet)
    with torch.inference_mode(), FlopCounterMode(display=False) as referenced, \
            reference.applied(job, _reference(size, torch.float32, "meta")):
        unet(x, t, encoder_hidden_states=ctx)
    return int(plain.get_total_flops()), int(referenced.get_total_flops())


def run(profile: Profile, models, log) -> Row:
    import torch

    from ...pipelines import reference
    from .unet import step_inputs

    unet = models.get("inpaint").pipe.unet
    size = profile.size
    x, t, ctx = step_inputs(unet, 2, size, unet.dtype)
    ref = _reference(size, unet.dtype)
    job = _job(unet)
    log(f"row 12: a guided {size}² inpaint step with and without a reference image; timing steps")

    def plain():
        unet(x, t, encoder_hidden_states=ctx)

    def referenced():
        with reference.applied(job, ref):
            unet(x, t, encoder_hidden_states=ctx)
        assert ref.steps == [0]

    with torch.inference_mode():
        t_plain, plain_all = best_of(plain, profile.step_repeats)
        t_ref, ref_all = best_of(referenced, profile.step_repeats)
    flops_plain, flops_ref = count_flops(dict(unet.config), size)
    ratio, flop_ratio = t_ref / t_plain, flops_ref / flops_plain
    log(f"row 12: step {fmt_s(t_plain)}, with a reference {fmt_s(t_ref)} ({ratio:.2f}×); FLOPs {flop_ratio:.2f}×")
    figures = {"size": size, "batch": 2, "dtype": str(unet.dtype).replace("torch.", ""), "step_s": t_plain,
               "step_all_s": plain_all, "step_with_reference_s": t_ref, "step_with_reference_all_s": ref_all,
               "ratio": ratio, "gflop_step": flops_plain / 1e9, "gflop_step_with_reference": flops_ref / 1e9,
               "flop_ratio": flop_ratio}
    measured = (f"a guided {size}² inpaint step with a reference image: {flop_ratio:.2f}× the FLOPs "
                f"({flops_ref / 1e9:.4g} against {flops_plain / 1e9:.4g} GFLOP), {ratio:.2f}× the time "
                f"({fmt_s(t_ref)} against {fmt_s(t_plain)}), at the steps inside its window only; no weights added")
    return Row(12, "A reference image costs one more UNet pass", measured, f"≤ {GOAL_RATIO:.1f}× a step",
               max(ratio, flop_ratio) <= GOAL_RATIO, figures)
