"""The compiled UNet: torch.compile (inductor) with the weights frozen, compiled in the background.

Eager PyTorch on the CPU lays out every convolution weight again on every call and runs each
elementwise op on its own; inductor with freezing packs the weights once and fuses the rest (row 1 of
``python -m core.devtools.bench``).  Compiling takes minutes and is specific to the shapes of the UNet's inputs,
so it never blocks a job: ``install`` replaces the UNet's ``forward`` with a dispatcher that runs the
eager UNet until the compiled one for the call's shapes is ready, and starts compiling those shapes in
a background thread the first time it sees them.  A shape whose compilation fails stays eager.

The compiled graph holds its own, prepacked copy of the weights (the eager weights stay, for the
shapes that are not compiled): ``max_shapes`` bounds how many such copies one UNet may have, and a
shape is compiled only when ``has_room(bytes)`` says the copy fits (checked again at each later call
of that shape, so it compiles once memory has been freed).

With a ``gate`` (``core.models.compile_gate``: the engine's) the compilation waits until no job is
queued or running, and pauses while one is (jobs then run eagerly, whatever their shape); without one
(the benchmark, tests) it starts at once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import warnings
from collections.abc import Callable

log = logging.getLogger(__name__)

# inductor settings while compiling: weights become constants (folded, and convolution/linear weights
# prepacked for oneDNN once instead of on every call).  Valid for inference only, which is all the
# engine does.  They are patched into inductor's config around the compiling call: given to
# torch.compile as ``options`` instead, freezing is silently not applied (torch 2.13).
INDUCTOR_OPTIONS = {"freezing": True, "cpp.weight_prepack": True}
# A gated compilation compiles its kernels one at a time in its own thread (no pool of compile
# workers), so that pausing that thread pauses all of it.
GATED_OPTIONS = {"compile_threads": 1}
MAX_SHAPES = 2
# With a compiled UNet the model's width and height are multiples of 64 px instead of 8: regions of
# similar aspect then share one compiled graph (geometry.model_size: the stretch is at most half a step
# of the shorter side, 6% at 512² and 12% at 1:4, undone on the way back).
COMPILED_MULTIPLE = 64
SIMPLE = (type(None), bool, int, float, str)
# What one compiled shape adds, as a multiple of the UNet's weight bytes: measured +1.75 GiB per shape
# for the SD2 UNet's 1.61 GiB of bf16 weights (python -m core.devtools.bench, row 1), rounded up.
COPY_FACTOR = 1.15


def shape_key(args: tuple, kwargs: dict):
    """What a compiled graph is specific to: each tensor's shape, dtype and device, the other arguments'
    values, and the grad mode.  None when an argument is of a kind the dispatcher does not compile
    for (a dict of extra inputs, a list...): such calls always run eagerly."""
    import torch

    def one(v):
        if isinstance(v, torch.Tensor):
            return ("tensor", tuple(v.shape), str(v.dtype), str(v.device))
        if isinstance(v, SIMPLE):
            return ("value", v)
        raise TypeError

    try:
        parts = tuple((i, one(a)) for i, a in enumerate(args)) + tuple((k, one(v)) for k, v in sorted(kwargs.items()))
    except TypeError:
        return None
    return parts, torch.is_grad_enabled(), torch.is_inference_mode_enabled()


class CompiledUNet:
    """Dispatches the calls of one UNet between its eager forward and compiled graphs.

    ``on_status(state, detail)`` hears "compiling", "compiled" (detail: seconds), "compile_failed"
    (detail: the error), "compile_skipped" (not enough memory for the compiled copy; said once per
    shape) and, with a gate, "compile_paused" (a job arrived; "compiling" again when it resumes), each
    with the shape key's tensor shapes.  ``options``: inductor settings.  ``has_room(bytes)``: whether
    that much memory can be spent on a compiled copy (None: always).  ``gate``: a
    ``compile_gate.CompileGate`` that holds compilations while the engine is busy (None: compile at once).
    """

    def __init__(self, unet, *, options: dict | None = None, max_shapes: int = MAX_SHAPES,
                 on_status: Callable[[str, str], None] | None = None,
                 has_room: Callable[[int], bool] | None = None, gate=None):
        import torch

        self.unet = unet
        self.eager = type(unet).forward.__get__(unet)
        self.options = dict(INDUCTOR_OPTIONS if options is None else options)
        self.max_shapes = max_shapes
        self.on_status = on_status
        self.ready: set = set()
        self.failed: dict = {}
        self.skipped: set = set()     # shapes not compiled (yet) for want of memory
        self.has_room = has_room
        self.gate = gate
        self.copy_bytes = int(COPY_FACTOR * sum(p.numel() * p.element_size() for p in unet.parameters()))
        self.calls = {"eager": 0, "compiled": 0, "refused": 0}
        self.timings: dict = {}       # shape key -> compiling seconds, paused seconds, pauses
        self._lock = threading.Lock()
        self._compiling = None
        self._thread: threading.Thread | None = None
        self._compiled = torch.compile(_forward_module(unet), dynamic=False)

    # --- dispatch -------------------------------------------------------------------------------

    def __call__(self, *args, **kwargs):
        key = shape_key(args, kwargs)
        with self._lock:
            compiled = key is not None and key in self.ready and self._compiling is None
            if not compiled and key is not None and self._may_compile(key) and self._room_for(key):
                self._start(key, args, kwargs)
        if compiled:
            try:
                result = self._run_compiled(args, kwargs)
            except _Recompile as e:   # e.g. called under autocast: this call runs eagerly
                self.calls["refused"] += 1
                log.info("compiled UNet for %s does not fit this call, which runs eagerly: %s",
                         describe(key), str(e)[:300])
            else:
                self.calls["compiled"] += 1
                return result
        self.calls["eager"] += 1
        return self.eager(*args, **kwargs)

    def _run_compiled(self, args, kwargs):
        """The compiled graph, never a compilation: jobs must not stop for minutes.  (A guard that
        fails although the shape key matched would otherwise compile here, in the job's thread.)"""
        import torch

        try:
            with torch.compiler.set_stance("fail_on_recompile"):
                return self._compiled(*args, **kwargs)
        except RuntimeError as e:
            if "recompil" in str(e).lower():
                raise _Recompile(str(e)) from e
            raise

    def _may_compile(self, key) -> bool:
        inference = not key[1]    # freezing is for inference: a call with grad enabled stays eager
        return (inference and self._compiling is None and key not in self.ready and key not in self.failed
                and len(self.ready) + len(self.failed) < self.max_shapes)

    def _room_for(self, key) -> bool:
        """Whether the compiled copy for ``key`` fits in memory now; the first refusal is reported."""
        try:
            room = self.has_room is None or self.has_room(self.copy_bytes)
        except Exception:   # an unknown amount of memory does not stop compiling
            log.exception("memory check before compiling failed")
            room = True
        if room:
            self.skipped.discard(key)
        elif key not in self.skipped:
            self.skipped.add(key)
            detail = (f"{describe(key)}: the compiled copy needs about {self.copy_bytes / (1 << 30):.2f} GiB "
                      f"more memory than is free; runs eagerly")
            log.warning("UNet not compiled for %s", detail)
            self._status("compile_skipped", detail)
        return room

    # --- background compilation -----------------------------------------------------------------

    def _start(self, key, args, kwargs) -> None:
        import torch

        # The job goes on with its own tensors; the compilation gets copies (same shapes, values).
        copy = lambda v: v.detach().clone() if isinstance(v, torch.Tensor) else v  # noqa: E731
        args = tuple(copy(a) for a in args)
        kwargs = {k: copy(v) for k, v in kwargs.items()}
        self._compiling = key
        self._thread = threading.Thread(target=self._compile, args=(key, args, kwargs),
                                        name="unet-compile", daemon=True)
        self._thread.start()

    def _compile(self, key, args, kwargs) -> None:
        shapes = describe(key)
        if self.gate is None:
            self._compile_now(key, args, kwargs, self.options, None)
            return
        with self.gate.turn(on_pause=lambda paused: self._status("compile_paused" if paused else "compiling",
                                                                 shapes)) as paused:
            self._compile_now(key, args, kwargs, {**self.options, **GATED_OPTIONS}, paused)

    def _compile_now(self, key, args, kwargs, options: dict, paused) -> None:
        import torch
        import torch._inductor.config as inductor_config

        shapes = describe(key)
        self._status("compiling", shapes)
        t0 = time.perf_counter()
        try:
            grad, inference = key[1], key[2]
            with (torch.inference_mode(inference), torch.set_grad_enabled(grad),
                  inductor_config.patch(options)):
                self._compiled(*args, **kwargs)     # compiles, then runs once
        except Exception as e:   # any failure leaves this shape eager, with the reason logged
            with self._lock:
                self.failed[key] = f"{type(e).__name__}: {e}"
                self._compiling = None
            log.warning("UNet compilation for %s failed, staying eager: %s", shapes, self.failed[key][:500])
            self._status("compile_failed", f"{shapes}: the compiler failed (described in the engine's log); "
                                           f"this shape runs uncompiled")
            return
        seconds = time.perf_counter() - t0
        waited = paused.seconds if paused is not None else 0.0
        self.timings[key] = {"seconds": seconds - waited, "paused_seconds": waited,
                             "pauses": paused.count if paused is not None else 0}
        with self._lock:
            self.ready.add(key)
            self._compiling = None
        note = f" (and {waited:.1f} s paused while jobs ran)" if waited else ""
        log.info("UNet compiled for %s in %.1f s%s", shapes, seconds - waited, note)
        self._status("compiled", f"{shapes} in {seconds - waited:.1f} s{note}")

    def _status(self, state: str, detail: str) -> None:
        if self.on_status is None:
            return
        try:
            self.on_status(state, detail)
        except Exception:   # a listener's failure must not break compilation
            log.exception("compile status listener failed")

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the compilation under way, if any; True when none is left running."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    @property
    def compiling(self) -> bool:
        return self._compiling is not None


class _Recompile(Exception):
    pass


def _forward_module(unet):
    """A module whose forward is the UNet class's own forward: what torch.compile traces (the UNet's
    instance ``forward`` is the dispatcher, which must not be traced into)."""
    import torch

    class Forward(torch.nn.Module):
        def __init__(self, unet):
            super().__init__()
            self.unet = unet

        def forward(self, *args, **kwargs):
            return type(self.unet).forward(self.unet, *args, **kwargs)

    return Forward(unet)


def describe(key) -> str:
    """The tensor shapes of a shape key, for people: "[2, 9, 64, 64], [], [2, 77, 1024]"."""
    return ", ".join(str(list(v[1])) for _name, v in key[0] if v[0] == "tensor")


def size_multiple(pipe) -> int:
    """What the model's width and height are multiples of for this pipeline: 64 when its UNet is
    compiled, else 8 (the VAE's factor)."""
    unet = getattr(pipe, "unet", None)
    return COMPILED_MULTIPLE if unet is not None and installed(unet) is not None else 8


def install(unet, **kw) -> CompiledUNet:
    """Make ``unet(...)`` go through a ``CompiledUNet`` (idempotent); returns the dispatcher."""
    current = unet.__dict__.get("forward")
    if isinstance(current, CompiledUNet):
        return current
    # diffusers' upsampler calls an lru_cache'd version check; dynamo says so once per process
    warnings.filterwarnings("ignore", message="Dynamo detected a call to a `functools.lru_cache`")
    dispatcher = CompiledUNet(unet, **kw)
    unet.forward = dispatcher
    return dispatcher


def installed(unet) -> CompiledUNet | None:
    current = unet.__dict__.get("forward")
    return current if isinstance(current, CompiledUNet) else None


@contextlib.contextmanager
def eager(unet):
    """Within the block the UNet's calls run eagerly (a LoRA attached to it is not in the compiled graphs)."""
    dispatcher = installed(unet)
    if dispatcher is None:
        yield
        return
    del unet.forward
    try:
        yield
    finally:
        unet.forward = dispatcher


def uninstall(unet) -> None:
    if installed(unet) is not None:
        del unet.forward
