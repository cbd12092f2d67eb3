"""Memory on the engine's device: how much is free, how to give some back, and out-of-memory errors."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable

from .resolver import ModelError

log = logging.getLogger(__name__)
GiB = 1 << 30


class OutOfMemory(ModelError):
    code = "out_of_memory"


def retry_after_unloading(fn: Callable[[], object], unload_all: Callable[[], object], *, what: str, failed: str):
    """``fn()``; on out-of-memory ``what`` (logged), ``unload_all()`` and run ``fn`` once more.  A second
    out-of-memory raises OutOfMemory(``failed``); any other error passes through."""
    try:
        return fn()
    except Exception as e:
        if not is_out_of_memory(e):
            raise
        log.warning("out of memory %s: unloading every cached model and retrying once", what)
    unload_all()
    try:
        return fn()
    except Exception as e:
        if is_out_of_memory(e):
            raise OutOfMemory(failed) from e
        raise


def run_with_memory_retry(fn: Callable[[], object], models):
    """Run ``fn`` (a job); on out-of-memory unload every cached model and run it once more."""
    return retry_after_unloading(fn, models.unload_all, what="during a job",
                                 failed="not enough memory for this job, even with every other model unloaded: "
                                        "try a smaller selection or fewer images")


def is_out_of_memory(exc: BaseException | None) -> bool:
    """True for MemoryError, torch's OutOfMemoryError and allocator failures, also when chained."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, (MemoryError, OutOfMemory)) or type(exc).__name__ == "OutOfMemoryError":
            return True
        text = str(exc).lower()
        if isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text
                                              or "not enough memory" in text):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def available_memory(device: str) -> int | None:
    """Bytes that can still be allocated on ``device`` (None when unknown)."""
    try:
        if device == "cuda":
            import torch

            free, _total = torch.cuda.mem_get_info()
            return int(free + torch.cuda.memory_reserved() - torch.cuda.memory_allocated())
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:
        return None


def free_memory(device: str) -> None:
    gc.collect()
    if device == "cuda":
        try:
            import torch

            torch.cuda.empty_cache()
        except Exception:
            pass


