"""When a background compilation may use the CPU: only while the engine is idle.

On the shared 2-core machine of the benchmark a compilation running beside a job could not be shown to
slow it by at most the 15% an artist may lose (README, "Background compilation beside a running job":
both want the same two cores, and the compiler's Python work the same interpreter lock).  So a
compilation starts only when no job is queued or running, and pauses when one arrives.

A running inductor compilation cannot be paused from outside: it is Python code (dynamo, AOT autograd,
inductor's lowering) in a thread, calling a C++ compiler.  ``pausable`` installs a trace function in
the compiling thread only, which blocks that thread at its next Python function call while the engine
is busy; the C++ compiler it is waiting for (one kernel at a time: ``compile_threads`` is 1 for a gated
compilation) finishes its file at the lowest CPU priority, which the compiling thread and its
children get on Linux.  The job thus waits for nothing but loses a fraction of a core for at most
the rest of one kernel's compilation.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import sys
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

SETTLE = 1.0        # seconds without a job before a compilation starts or resumes
LOWEST_PRIORITY = 19
# Where a compilation may stop: in the compiler's own code (dynamo, AOT autograd, inductor, FX), and
# never while anything on the stack may hold a lock another thread needs to finish a job (a logging
# handler, an import, a condition or queue, this gate).
PAUSE_IN = ("torch/_dynamo/", "torch/_inductor/", "torch/fx/", "torch/_functorch/", "torch/_subclasses/")
NEVER_UNDER = ("logging/", "importlib/", "<frozen importlib", "threading.py", "queue.py", "concurrent/",
               "compile_gate.py")


class CompileGate:
    """Says whether the engine is busy (a job queued or running: ``set_busy``, from the engine's queue)
    and holds background compilations until it has been idle for ``settle`` seconds."""

    def __init__(self, settle: float = SETTLE):
        self.settle = settle
        self.busy = False            # read without the lock by the pausing trace function
        self._cond = threading.Condition()
        self._idle_since = time.monotonic()
        self._turn = threading.Lock()    # one gated compilation at a time, whichever model it is for
        self.pauses = 0

    def set_busy(self, busy: bool) -> None:
        with self._cond:
            if self.busy and not busy:
                self._idle_since = time.monotonic()
            self.busy = bool(busy)
            self._cond.notify_all()

    def wait_idle(self) -> None:
        """Return once no job has been queued or running for ``settle`` seconds."""
        with self._cond:
            while True:
                if not self.busy:
                    left = self._idle_since + self.settle - time.monotonic()
                    if left <= 0:
                        return
                    self._cond.wait(left)
                else:
                    self._cond.wait()

    @contextlib.contextmanager
    def turn(self, on_pause: Callable[[bool], None] | None = None):
        """A compilation's turn: waits for the other gated compilations and for an idle engine; within
        the block, this thread stops at its next Python call while the engine is busy and goes on once it
        is idle again (``on_pause(True)`` / ``on_pause(False)`` hear each pause and resumption).  Yields a
        ``Paused`` record of the pauses."""
        with self._turn:
            self.wait_idle()
            paused = Paused()

            def pause() -> None:
                t0 = time.monotonic()
                self.pauses += 1
                paused.count += 1
                _tell(on_pause, True)
                self.wait_idle()
                paused.seconds += time.monotonic() - t0
                _tell(on_pause, False)

            here = inspect.currentframe()     # this generator; then contextlib's __enter__; then the ``with``
            base = here.f_back.f_back if here is not None and here.f_back is not None else None

            def trace(frame, event, arg):
                if self.busy and safe_to_pause(frame, base):
                    pause()
                return None          # no per-line tracing: one check per Python call

            lowest_priority()
            previous = sys.gettrace()
            sys.settrace(trace)
            try:
                yield paused
            finally:
                sys.settrace(previous)


class Paused:
    def __init__(self):
        self.count = 0
        self.seconds = 0.0


def safe_to_pause(frame, base=None) -> bool:
    """Whether the compiling thread may stop in ``frame``: a call in the compiler's code with nothing on
    the stack above ``base`` (where the compilation was entered) that could hold a lock a job needs.
    Looked at only while a job waits to run."""
    if not any(part in frame.f_code.co_filename.replace("\\", "/") for part in PAUSE_IN):
        return False
    while frame is not None and frame is not base:
        name = frame.f_code.co_filename.replace("\\", "/")
        if any(part in name for part in NEVER_UNDER):
            return False
        frame = frame.f_back
    return True


def _tell(listener, paused: bool) -> None:
    if listener is None:
        return
    try:
        listener(paused)
    except Exception:   # a listener's failure must not stop the compilation
        log.exception("compile pause listener failed")


def lowest_priority() -> bool:
    """Give the calling thread (and the processes it starts: the C++ compiler) the lowest CPU priority.
    Linux only, where a thread has its own nice value; elsewhere the call does nothing."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOWEST_PRIORITY)
        return True
    except (OSError, AttributeError):
        return False
