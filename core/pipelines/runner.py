"""Run one job in this process: validate, dispatch to the mode's pipeline module."""

from __future__ import annotations

import importlib

from ..contract.jobcontrol import JobControl
from ..contract.jobs import JobRequest, JobResult, validate


def run_job(req: JobRequest, models, control: JobControl | None = None) -> JobResult:
    """Validate ``req`` and run it.  Raises ValidationError, ModelError or Cancelled."""
    req = validate(req)
    module = importlib.import_module(f"core.pipelines.{req.mode}")
    return module.run(req, models, control or JobControl())
