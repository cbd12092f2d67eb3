"""Progress reporting and cancellation for a running job.  Standard library only."""

from __future__ import annotations

import threading
from collections.abc import Callable

# retrying: a cluster gateway runs the job again from the start after losing its GPU worker
PHASES = ("queued", "loading", "encoding", "denoising", "decoding", "finishing", "retrying")


class Cancelled(Exception):
    """Raised inside a job when it was cancelled; the job returns no partial image."""


class JobControl:
    """Handed to a running job.  Thread-safe: ``cancel`` may be called from any thread.

    ``on_progress(step, total, phase)`` and ``on_preview(rgb_u8_array)`` are optional callbacks.
    ``check()`` raises ``Cancelled`` once ``cancel()`` was called; pipelines call it every step.
    """

    def __init__(self, on_progress: Callable[[int, int, str], None] | None = None,
                 on_preview: Callable[[object], None] | None = None, *, preview_every: int = 1):
        self._cancelled = threading.Event()
        self._on_progress = on_progress
        self._on_preview = on_preview
        self.preview_every = preview_every
        # How a step's latents become a preview image (the pipeline template sets it to the tiny
        # autoencoder's decoder when that is installed); None: the pipelines' linear projection.
        self.decode_preview: Callable[[object], object] | None = None
        self.phase = "queued"
        self.step = 0
        self.total = 0
        # A job spanning several pipeline runs (tiles, images) adds their steps up here.
        self._offset = 0
        self._grand_total: int | None = None

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def check(self) -> None:
        if self._cancelled.is_set():
            raise Cancelled("cancelled")

    @property
    def wants_preview(self) -> bool:
        return self._on_preview is not None

    def set_phase(self, phase: str, step: int | None = None, total: int | None = None) -> None:
        self.check()
        self.phase = phase
        if step is not None:
            self.step = step
        if total is not None:
            self.total = total
        if self._on_progress:
            self._on_progress(self.step, self.total, phase)

    def plan_total(self, total: int) -> None:
        """Announce the number of steps of the whole job (e.g. summed over tiles)."""
        self._grand_total = total
        self._offset = 0

    def advance_offset(self, steps: int) -> None:
        """A sub-run of ``steps`` steps finished; following steps count after it."""
        self._offset += steps

    def report_step(self, step: int, total: int) -> None:
        """Step ``step`` (1-based) of ``total`` of the current pipeline run finished."""
        self.check()
        if self._grand_total is not None:
            step, total = self._offset + step, self._grand_total
        self.step, self.total, self.phase = step, total, "denoising"
        if self._on_progress:
            self._on_progress(step, total, "denoising")

    def preview(self, image) -> None:
        if self._on_preview is not None:
            self._on_preview(image)
