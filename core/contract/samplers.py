"""The samplers a job may denoise with: diffusers schedulers, each made per job from the model's own
scheduler config (so its betas, training timesteps and prediction type, epsilon or v, are the
model's).  Standard library only: ``core.models.samplers`` turns a row into a scheduler.

``auto`` is the model's catalogue default (``catalog.ModelSpec.sampler``); ``model`` is the scheduler
the model ships with (PNDM for the SD2 512 models, DDIM for 2.1 at 768).
"""

from __future__ import annotations

from dataclasses import dataclass

AUTO = "auto"
MODEL = "model"
# When a model has no catalogue entry (a fine-tune in a folder) and ``auto`` is asked for.
FALLBACK = "dpmpp_2m"


@dataclass(frozen=True)
class Sampler:
    key: str
    label: str                  # the dock's list
    scheduler: str              # diffusers scheduler class; "" = the model's own
    settings: tuple[tuple[str, object], ...] = ()   # set on top of the model's scheduler config
    ancestral: bool = False     # draws fresh noise at every step (from the job's generators)
    note: str = ""              # the dock's tooltip

    @property
    def settings_dict(self) -> dict:
        return dict(self.settings)


# ``timestep_spacing`` is each class's own default, set explicitly: a model's config may carry the
# spacing of its own scheduler (PNDM's "leading"), which would otherwise leak into another class.
SAMPLERS: tuple[Sampler, ...] = (
    Sampler("dpmpp_2m", "DPM++ 2M", "DPMSolverMultistepScheduler",
            (("algorithm_type", "dpmsolver++"), ("solver_order", 2), ("use_karras_sigmas", False),
             ("timestep_spacing", "linspace")),
            note="DPM-Solver++ (2M): high-quality guided samples in 15–25 steps"),
    Sampler("dpmpp_2m_karras", "DPM++ 2M Karras", "DPMSolverMultistepScheduler",
            (("algorithm_type", "dpmsolver++"), ("solver_order", 2), ("use_karras_sigmas", True),
             ("timestep_spacing", "linspace")),
            note="DPM++ 2M with the noise levels of Karras et al. (smaller steps near the end)"),
    Sampler("euler", "Euler", "EulerDiscreteScheduler", (("timestep_spacing", "linspace"),),
            note="Euler: simple and steady; 25–30 steps"),
    Sampler("euler_a", "Euler ancestral", "EulerAncestralDiscreteScheduler", (("timestep_spacing", "linspace"),),
            ancestral=True, note="Euler ancestral: new noise at every step, so the image keeps changing with the "
                                 "step count; 20–30 steps"),
    Sampler("unipc", "UniPC", "UniPCMultistepScheduler", (("timestep_spacing", "linspace"),),
            note="UniPC: the best of these at very few steps (5–10)"),
    Sampler("ddim", "DDIM", "DDIMScheduler", (("timestep_spacing", "leading"),),
            note="DDIM (eta 0), as the original Stable Diffusion code samples; 50 steps"),
    Sampler(MODEL, "Model's own (PNDM)", "",
            note="The scheduler the model ships with: PNDM for the SD2 512 models (it runs the UNet once more "
                 "than the steps asked for), DDIM for 2.1 at 768; stock diffusers' default"),
)

SAMPLER_SPECS: dict[str, Sampler] = {s.key: s for s in SAMPLERS}
SAMPLER_CHOICES: tuple[str, ...] = (AUTO, *SAMPLER_SPECS)


def resolve(choice: str, default: str | None) -> str:
    """The sampler a job runs: ``choice``, or for ``auto`` the model's catalogue ``default``."""
    if choice != AUTO:
        return choice
    return default if default in SAMPLER_SPECS else FALLBACK


def label(key: str) -> str:
    return SAMPLER_SPECS[key].label if key in SAMPLER_SPECS else key
