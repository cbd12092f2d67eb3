"""The job kinds: one module per mode, found through ``PIPELINES``.

Each module ``core/pipelines/<mode>.py`` defines ``PIPELINE``, an object of the ``base.Pipeline``
protocol (most derive from ``base.PipelineBase``, which times the job, chooses the seed and builds
the ``JobResult``).  Modules are imported on first use: this package itself imports no torch, so the
engine answers its hello before the heavy libraries are loaded.
"""

from __future__ import annotations

import importlib
import importlib.util

from ..contract.jobcontrol import JobControl
from ..contract.jobs import JobRequest, JobResult, validate

# mode -> the module holding its PIPELINE (every mode of ``contract.modes`` has one: tested).
PIPELINES: dict[str, str] = {
    "inpaint": f"{__name__}.inpaint",
    "restyle": f"{__name__}.restyle",
    "depth": f"{__name__}.depth",
    "upscale": f"{__name__}.upscale",
    "generate": f"{__name__}.generate",
    "fill": f"{__name__}.fill",
    "expand": f"{__name__}.expand",
    "live": f"{__name__}.live",
    "preprocess": f"{__name__}.preprocess",
}


def available(mode: str) -> bool:
    """Whether this engine has a pipeline for ``mode`` (without importing it)."""
    return mode in PIPELINES and importlib.util.find_spec(PIPELINES[mode]) is not None


def pipeline(mode: str):
    """The ``Pipeline`` of ``mode`` (imports its module)."""
    return importlib.import_module(PIPELINES[mode]).PIPELINE


def execute(req: JobRequest, models, control: JobControl | None = None) -> JobResult:
    """Run a request that was validated where it entered this process (the engine validates each
    request once, on receipt).  Raises ValidationError, ModelError or Cancelled."""
    return pipeline(req.mode).run(req, models, control or JobControl())


def run_job(req: JobRequest, models, control: JobControl | None = None) -> JobResult:
    """Validate ``req`` and run it in this process (the command line, tests, benchmarks)."""
    return execute(validate(req), models, control)
