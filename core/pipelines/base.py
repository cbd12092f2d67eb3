"""What every job kind has in common: the ``Pipeline`` protocol and the ``PipelineBase`` template.

A job kind fills in ``work`` only: load its model, plan, run, make patches.  The template around it
times the job, chooses the seed (the request's, or a random one that is reported back), and builds
the ``JobResult`` with the seed, the model's name and the timings, the same way for every kind (as
IOPaint's ``InpaintModel.__call__`` wraps each model's ``forward``).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, ClassVar, Protocol

from ..contract.controls import REFERENCE, record
from ..contract.jobcontrol import JobControl
from ..contract.jobs import JobRequest, JobResult, Options, Params, Patch
from ..contract.params import SEED_MAX
from .preview import step_decoder

if TYPE_CHECKING:
    from pathlib import Path

    from ..models.device import DevicePolicy


class Models(Protocol):
    """What a pipeline asks of the model manager (``core.models.manager.ModelManager``)."""

    models_dir: Path | None

    @property
    def policy(self) -> DevicePolicy: ...

    def get(self, mode: str, name: str | None = None, *, control: JobControl | None = None, **kw): ...

    def get_part(self, mode: str, name: str | None = None, *, control: JobControl | None = None): ...

    def get_other(self, key: tuple, load, *, control: JobControl | None = None): ...

    def tiny_vae(self): ...


class Pipeline(Protocol):
    """One job kind.  ``run`` gets a validated request; it raises ValidationError for what only the
    pipeline can see (a flat depth map, an empty selection), ModelError, or Cancelled."""

    mode: str

    def run(self, req: JobRequest, models: Models, control: JobControl) -> JobResult: ...


@dataclass
class Output:
    """What a job kind's ``work`` gives back; the template turns it into the JobResult."""

    patches: list[Patch]
    model: str | None
    warnings: tuple[str, ...] = ()
    timings: dict = field(default_factory=dict)   # job-specific figures (region, model size, ...)
    options: Options | None = None                # the options as run, when the job settled one (Fill's backend)


def used_controls(req: JobRequest, controlnets) -> tuple[dict, ...]:
    """The result's records of the request's controls (``controls.record``): ``controlnets`` are the names of
    the ControlNets that ran (the job's ``timings["controlnets"]``), in the order of the controls that have one;
    a reference image has none.  Nothing when the job ran no control."""
    names = iter(controlnets)
    if not controlnets and all(c.type != REFERENCE for c in req.controls):
        return ()
    return tuple(record(c, None if c.type == REFERENCE else next(names, None)) for c in req.controls)


def choose_seed(params: Params) -> int:
    """The request's seed, or a random one (reported back with the result)."""
    return params.seed if params.seed is not None else secrets.randbelow(SEED_MAX + 1)


class PipelineBase:
    """The template.  ``seeded``: the job draws noise, so it gets a seed (image i uses seed + i) and the
    result reports it; ``single_image``: the job makes one image whatever ``num_images`` says."""

    mode: ClassVar[str]
    seeded: ClassVar[bool] = True
    single_image: ClassVar[bool] = False

    def run(self, req: JobRequest, models: Models, control: JobControl) -> JobResult:
        t0 = time.perf_counter()
        seed = choose_seed(req.params) if self.seeded else 0   # an unseeded job ignores it
        if control.wants_preview and control.decode_preview is None:
            control.decode_preview = step_decoder(models)
        out = self.work(req, models, control, seed)
        params = req.params
        if self.seeded:
            params = replace(params, seed=seed)
        if self.single_image:
            params = replace(params, num_images=1)
        timings = {"seconds": round(time.perf_counter() - t0, 3), **out.timings}
        used = used_controls(req, out.timings.get("controlnets") or ())
        return JobResult(self.mode, tuple(out.patches), out.model, params, out.options or req.options,
                         tuple(out.warnings), timings, used)

    def work(self, req: JobRequest, models: Models, control: JobControl, seed: int) -> Output:
        raise NotImplementedError
