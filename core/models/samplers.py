"""A job's sampler: a fresh diffusers scheduler made from the model's own scheduler config, on a
per-job view of the cached pipeline.

A loaded pipeline is shared by every job (``core.models.manager``), and a scheduler holds per-call
state (its timesteps, step index, a multistep solver's previous outputs), so a job never swaps the
cached pipeline's scheduler: ``job_pipeline`` gives a shallow copy of the pipeline that shares every
module (UNet, VAE, text encoder: no weight is copied) and owns a new scheduler.  The cached pipeline
keeps the scheduler the model ships with, whose config (betas, training timesteps, ``steps_offset``,
prediction type: epsilon or v) every sampler is made from.
"""

from __future__ import annotations

import copy

from ..contract.samplers import MODEL, SAMPLER_SPECS

# What a scheduler config says about the MODEL (its training noise schedule and what its UNet
# predicts), as opposed to how one scheduler class samples.  Only these cross from the model's own
# scheduler to another class: a PNDM's ``skip_prk_steps`` or a DPM's ``use_karras_sigmas`` must not.
MODEL_FACTS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
               "prediction_type", "steps_offset", "clip_sample", "set_alpha_to_one", "rescale_betas_zero_snr")


def make_scheduler(key: str, own):
    """A new scheduler for sampler ``key`` from ``own``, the model's scheduler (which is not changed).
    KeyError for an unknown key (validation refuses those first)."""
    import diffusers

    spec = SAMPLER_SPECS[key]
    if key == MODEL:
        return type(own).from_config(own.config)
    cls = getattr(diffusers, spec.scheduler)
    facts = {k: v for k, v in own.config.items() if k in MODEL_FACTS}
    return cls.from_config({**facts, **spec.settings_dict})


def job_pipeline(pipe, key: str):
    """A view of ``pipe`` for one job: the same modules, its own scheduler for sampler ``key``.  Whatever
    the pipeline call sets on itself (guidance, timestep count, interrupt flag) stays on the view."""
    view = copy.copy(pipe)
    view.scheduler = make_scheduler(key, pipe.scheduler)
    return view


def describe(scheduler) -> str:
    """The scheduler's class and the settings that tell samplers apart, for logs and timings."""
    cfg = scheduler.config
    parts = [type(scheduler).__name__, f"prediction {cfg.get('prediction_type', 'epsilon')}",
             f"spacing {cfg.get('timestep_spacing', '?')}"]
    if cfg.get("algorithm_type"):
        parts.append(f"{cfg['algorithm_type']} order {cfg.get('solver_order')}")
    if cfg.get("use_karras_sigmas"):
        parts.append("Karras sigmas")
    return ", ".join(parts)
