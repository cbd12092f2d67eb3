"""The compiled UNet's dispatcher (core/models/unet_compile.py) on a real tiny UNet, compiled by real inductor:
eager until the shape's graph is ready, the same numbers after, failures and unsupported calls stay
eager, and a pipeline loaded with ``compile`` in its policy runs through it."""

from __future__ import annotations

import dataclasses
import os
import time

import pytest
import torch

from core.models import env, unet_compile

# A shape whose compile takes long enough to be seen under way, and short enough for CI.
WAIT = 600


def small_unet():
    """A real UNet2DConditionModel with every kind of SD2 block, as small as inductor compiles fast
    (about a minute on 2 cores, against two for the tiny test pipelines' UNet)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=(32,), layers_per_block=1, sample_size=8, in_channels=9, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",), up_block_types=("CrossAttnUpBlock2D",),
        cross_attention_dim=32, attention_head_dim=8, use_linear_projection=True, norm_num_groups=8,
    ).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def unet():
    return small_unet()


def inputs(batch=2, side=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 9, side, side, generator=g), torch.tensor(500),
            torch.randn(batch, 77, 32, generator=g))


def call(unet, x, t, ctx):
    with torch.no_grad():
        return unet(x, t, encoder_hidden_states=ctx, return_dict=False)[0]


def test_eager_until_compiled_then_the_same_numbers(unet):
    x, t, ctx = inputs()
    expected = call(unet, x, t, ctx)        # plain eager, before anything is installed
    seen = []
    d = unet_compile.install(unet, on_status=lambda state, detail: seen.append((state, detail)))
    try:
        assert unet_compile.install(unet) is d          # idempotent
        first = call(unet, x, t, ctx)
        assert d.calls == {"eager": 1, "compiled": 0, "refused": 0}
        assert torch.equal(first, expected)             # the first call never waits: it ran eagerly
        assert d.wait(WAIT) and not d.compiling
        assert [s for s, _ in seen] == ["compiling", "compiled"]
        assert "[2, 9, 8, 8]" in seen[0][1] and "[2, 77, 32]" in seen[0][1]
        again = call(unet, x, t, ctx)
        assert d.calls == {"eager": 1, "compiled": 1, "refused": 0}
        torch.testing.assert_close(again, expected, rtol=1e-4, atol=1e-4)
        # other values, same shapes: the compiled graph, not values frozen in at compile time
        x2, t2, ctx2 = inputs(seed=1)
        torch.testing.assert_close(call(unet, x2, torch.tensor(20), ctx2), eager_only(unet, x2, torch.tensor(20), ctx2),
                                   rtol=1e-4, atol=1e-4)
        assert d.calls["compiled"] == 2
        # a call the graph's guards refuse (autocast is not in the shape key) never compiles in the
        # job's thread: it runs eagerly, and the graph still serves the next plain call
        with torch.autocast("cpu", dtype=torch.bfloat16):
            under = call(unet, x, t, ctx)
            assert torch.equal(under, eager_only(unet, x, t, ctx))
        assert d.calls["refused"] == 1 and d.calls["eager"] == 2 and not d.compiling
        call(unet, x, t, ctx)
        assert d.calls["compiled"] == 3
        # a new shape runs eagerly and compiles; beyond max_shapes nothing more is compiled
        x3, t3, ctx3 = inputs(batch=1, side=16)
        call(unet, x3, t3, ctx3)
        assert d.compiling or len(d.ready) == 2
        assert d.wait(WAIT) and len(d.ready) == 2
        x4, t4, ctx4 = inputs(batch=1, side=24)
        call(unet, x4, t4, ctx4)
        assert not d.compiling and len(d.ready) == 2 and d.calls["eager"] == 4
    finally:
        unet_compile.uninstall(unet)
    assert unet_compile.installed(unet) is None
    assert torch.equal(call(unet, x, t, ctx), expected)


def eager_only(unet, *args):
    with torch.no_grad():
        return type(unet).forward(unet, args[0], args[1], encoder_hidden_states=args[2], return_dict=False)[0]


def test_calls_it_does_not_compile_for_stay_eager(unet):
    d = unet_compile.install(unet)
    try:
        x, t, ctx = inputs()
        with torch.enable_grad():                       # freezing is for inference only
            unet(x, t, encoder_hidden_states=ctx, return_dict=False)
        with torch.no_grad():                           # a dict argument: no shape key
            unet(x, t, encoder_hidden_states=ctx, cross_attention_kwargs={}, return_dict=False)
        assert not d.compiling and not d.ready and not d.failed and d.calls["eager"] == 2
    finally:
        unet_compile.uninstall(unet)


def test_a_failed_compilation_leaves_the_shape_eager(unet, caplog):
    seen = []
    # An option inductor does not know makes the compilation itself fail (not the UNet).
    d = unet_compile.install(unet, options={"no_such_inductor_option": True},
                             on_status=lambda state, detail: seen.append(state))
    try:
        x, t, ctx = inputs()
        expected = eager_only(unet, x, t, ctx)
        assert torch.equal(call(unet, x, t, ctx), expected)
        assert d.wait(WAIT)
        assert seen == ["compiling", "compile_failed"] and len(d.failed) == 1 and not d.ready
        assert torch.equal(call(unet, x, t, ctx), expected)
        assert not d.compiling and d.calls == {"eager": 2, "compiled": 0, "refused": 0}   # not tried again
        assert "staying eager" in caplog.text
    finally:
        unet_compile.uninstall(unet)


def test_a_shape_compiles_only_when_its_compiled_copy_fits_in_memory(unet):
    """``has_room`` is asked for the compiled copy's bytes before each compilation: refused, the call
    runs eagerly and the refusal is reported once; when memory is free again, the next call of that
    shape compiles.  (The compilation is made to fail at once, to keep the test short.)"""
    weights = sum(p.numel() * p.element_size() for p in unet.parameters())
    asked, seen = [], []
    room = [False]

    def has_room(extra):
        asked.append(extra)
        return room[0]

    d = unet_compile.install(unet, options={"no_such_inductor_option": True}, has_room=has_room,
                             on_status=lambda state, detail: seen.append((state, detail)))
    try:
        assert d.copy_bytes == int(unet_compile.COPY_FACTOR * weights)
        x, t, ctx = inputs()
        expected = eager_only(unet, x, t, ctx)
        for _ in range(2):
            assert torch.equal(call(unet, x, t, ctx), expected)
            assert not d.compiling
        assert asked == [d.copy_bytes] * 2
        assert [s for s, _ in seen] == ["compile_skipped"] and "[2, 9, 8, 8]" in seen[0][1]
        assert "GiB" in seen[0][1] and d.skipped
        room[0] = True
        assert torch.equal(call(unet, x, t, ctx), expected)
        assert d.wait(WAIT) and not d.skipped
        assert [s for s, _ in seen] == ["compile_skipped", "compiling", "compile_failed"]
        call(unet, x, t, ctx)
        assert len(asked) == 3                      # a failed shape is not tried, nor asked about, again
    finally:
        unet_compile.uninstall(unet)


def test_shape_key():
    x, t, ctx = inputs()
    with torch.no_grad():
        key = unet_compile.shape_key((x, t), {"encoder_hidden_states": ctx, "return_dict": False})
        assert key == unet_compile.shape_key((x + 1, torch.tensor(3)), {"return_dict": False,
                                                                         "encoder_hidden_states": ctx * 2})
        assert key != unet_compile.shape_key((x[:1], t), {"encoder_hidden_states": ctx[:1], "return_dict": False})
        assert key != unet_compile.shape_key((x.bfloat16(), t), {"encoder_hidden_states": ctx, "return_dict": False})
        assert key != unet_compile.shape_key((x, t), {"encoder_hidden_states": ctx, "return_dict": True})
        assert unet_compile.shape_key((x, t), {"added_cond_kwargs": {"a": x}}) is None
    assert key != unet_compile.shape_key((x, t), {"encoder_hidden_states": ctx, "return_dict": False})  # grad mode
    assert unet_compile.describe(key) == "[2, 9, 8, 8], [], [2, 77, 32]"


def test_a_pipeline_loaded_with_compile_runs_through_the_dispatcher(tiny_root, policy, tmp_path):
    """The model manager installs the dispatcher when the policy says so and reports its progress like
    a load; the model works at multiples of 64 px (fewer shapes to compile); the second job runs the
    compiled graph and gives the first job's (eager) result within bf16 rounding."""
    from core.models.manager import ModelManager
    from core.pipelines import run_job

    from .helpers import inpaint_request, rect_mask, rgba_u8

    states = []
    plain = ModelManager(policy, models_dir=tiny_root, hub_cache=tmp_path / "none")
    compiled = ModelManager(dataclasses.replace(policy, compile=True), models_dir=tiny_root,
                            hub_cache=tmp_path / "none", on_status=lambda s: states.append(s["state"]))
    request = inpaint_request(rgba_u8(64, 80, seed=2), rect_mask(64, 80, 20, 16, 60, 48), steps=2, seed=3)
    unet = compiled.get("inpaint").pipe.unet
    d = unet_compile.installed(unet)
    assert d is not None and unet_compile.installed(plain.get("inpaint").pipe.unet) is None
    latents = []
    hook = unet.register_forward_pre_hook(lambda _m, args: latents.append(tuple(args[0].shape[-2:])))
    try:
        first = run_job(request, compiled)
        assert d.calls == {"eager": 2, "compiled": 0, "refused": 0}
        assert d.wait(WAIT)
        assert states[-2:] == ["compiling", "compiled"]
        second = run_job(request, compiled)
        assert d.calls["compiled"] == 2                             # both steps of the second job
    finally:
        hook.remove()
    assert len(set(latents)) == 1 and all(8 * side % 64 == 0 for side in latents[0])
    a = torch.frombuffer(bytearray(first.patches[0].image.data), dtype=torch.uint8).float()
    b = torch.frombuffer(bytearray(second.patches[0].image.data), dtype=torch.uint8).float()
    assert (a - b).abs().mean() < 2.0                           # bf16: a few 8-bit levels at most
    assert first.patches[0].image.width == second.patches[0].image.width


def test_the_model_manager_compiles_only_beside_its_reserve(tiny_root, policy, tmp_path):
    """The manager's memory check for a compilation: the compiled copy plus ``reserve`` must fit in
    what is available (unloading would not help: torch keeps compiled memory)."""
    from core.models.manager import ModelManager

    free = [64 * 2**30]
    manager = ModelManager(dataclasses.replace(policy, compile=True), models_dir=tiny_root,
                           hub_cache=tmp_path / "none", available_memory=lambda: free[0], reserve=2**30)
    d = unet_compile.installed(manager.get("inpaint").pipe.unet)
    assert d.has_room(d.copy_bytes)
    free[0] = d.copy_bytes + 2**30
    assert d.has_room(d.copy_bytes)
    free[0] -= 1
    assert not d.has_room(d.copy_bytes)
    manager.unload_all()


def test_unloading_a_compiled_model_warns_that_its_memory_stays(tiny_root, policy, tmp_path, caplog):
    """A known torch 2.13 limitation, measured on a 383 MB UNet: after unloading and dynamo's reset,
    61 of its 71 large weight tensors stay referenced from torch's C++ side.  The engine says so."""
    from core.models.manager import ModelManager

    manager = ModelManager(dataclasses.replace(policy, compile=True), models_dir=tiny_root,
                           hub_cache=tmp_path / "none")
    plain = ModelManager(policy, models_dir=tiny_root, hub_cache=tmp_path / "none")
    manager.get("inpaint")
    plain.get("inpaint")
    with caplog.at_level("WARNING", logger="core.models.manager"):
        plain.unload_all()
        assert "compiled UNet" not in caplog.text
        manager.unload_all()
    assert "had a compiled UNet" in caplog.text and "restarts" in caplog.text


def test_an_engine_compiles_by_default_only_while_idle_and_stops_cleanly(loop, tiny_root):
    """With no flag and DD_COMPILE unset the engine compiles (the capabilities say so); the first job
    finishes without waiting and the compilation starts only after it; a job that arrives meanwhile
    pauses it ("compile_paused", then "compiling" once the engine is idle again); stopping the engine in
    the middle of a compilation is prompt and clean."""
    import asyncio
    import time

    from core.contract.events import Finished, JobCancelled
    from core.link.client import EngineClient

    from .engine_helpers import ROOT, collect, engine_env
    from .helpers import inpaint_request, rect_mask, rgba_u8

    caps, model_status = [], []
    client = EngineClient(cwd=ROOT, env=engine_env(tiny_root, DD_COMPILE=""), on_capabilities=caps.append,
                          on_model_status=model_status.append, heartbeat_timeout=60)
    loop.run(client.start())
    states = lambda: [s.state for s in model_status]  # noqa: E731
    try:
        request = inpaint_request(rgba_u8(64, 80, seed=2), rect_mask(64, 80, 20, 16, 60, 48), steps=2, seed=3)
        events = loop.run(collect(loop.call(lambda: client.submit(request))))
        assert isinstance(events[-1], Finished)
        assert caps and "UNet compile: torch.compile with inductor" in caps[-1].device_reason
        assert "compiling" not in states(), states()       # nothing was compiled while the job ran
        deadline = time.monotonic() + 120
        while "compiling" not in states() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "compiling" in states(), states()            # the engine went idle: it compiles now
        # The compiling thread pauses at its next Python call, which may come only once the C++ compiler
        # it waits for has finished its kernel: a long job (cancelled once the compilation has paused for
        # it, or has finished) leaves it the time a short one might not.
        long_job = inpaint_request(rgba_u8(64, 80, seed=2), rect_mask(64, 80, 20, 16, 60, 48), steps=512, seed=4)

        async def second_job():
            handle = client.submit(long_job)
            events = []
            async for ev in handle.events():
                events.append(ev)
                after = states()[states().index("compiling") + 1:]
                if ("compile_paused" in after or "compiled" in after) and not handle.cancel_requested:
                    handle.cancel()
            return events

        second = loop.run(asyncio.wait_for(second_job(), 300))
        assert isinstance(second[-1], (Finished, JobCancelled))
        seen = states()
        assert seen[seen.index("compiling") + 1] == "compile_paused", seen   # it was compiling when the job came
        deadline = time.monotonic() + 60
        while states().count("compiling") < 2 and "compiled" not in states() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert states().count("compiling") == 2 or "compiled" in states(), states()    # and went on after it
    finally:
        t0 = time.perf_counter()
        loop.run(client.stop())
        stopped = time.perf_counter() - t0
    assert client.status.state == "stopped" and stopped < 30


def test_the_engine_compiles_unless_told_not_to(monkeypatch):
    from core.engine.stdio import build_parser, service_kwargs
    from core.models.device import engine_wants_compile

    monkeypatch.delenv("DD_COMPILE", raising=False)
    assert engine_wants_compile(None) is True
    assert engine_wants_compile(False) is False
    monkeypatch.setenv("DD_COMPILE", "0")
    assert engine_wants_compile(None) is False and engine_wants_compile(True) is True   # the flag wins
    compile_of = lambda *argv: service_kwargs(build_parser().parse_args(list(argv)))["compile"]  # noqa: E731
    assert (compile_of(), compile_of("--compile"), compile_of("--no-compile")) == (None, True, False)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--compile", "--no-compile"])


def gate_and_statuses(settle: float = 0.05):
    from core.models.compile_gate import CompileGate

    return CompileGate(settle=settle), []


def wait_for(predicate, timeout: float = WAIT) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_gated_compilation_waits_for_an_idle_engine_and_pauses_while_a_job_runs(unet):
    """The engine's gate: while a job runs the shape does not compile (every call runs eagerly); once
    idle it compiles; a job arriving mid-compilation pauses it (the job's calls run eagerly, with the
    same numbers), and it goes on once the engine is idle again."""
    import time

    gate, seen = gate_and_statuses()

    def on_status(state, detail):
        seen.append(state)
        if state == "compiling" and seen.count("compiling") == 1:
            gate.set_busy(True)          # a job arrives just as the compilation starts

    gate.set_busy(True)                  # the job whose first call asks for the shape
    d = unet_compile.install(unet, on_status=on_status, gate=gate)
    try:
        x, t, ctx = inputs()
        expected = eager_only(unet, x, t, ctx)
        assert torch.equal(call(unet, x, t, ctx), expected)
        time.sleep(0.3)
        assert d.compiling and seen == [] and not d.ready         # it waits for the engine to be idle
        gate.set_busy(False)
        assert wait_for(lambda: "compile_paused" in seen), seen
        assert seen == ["compiling", "compile_paused"] and d.compiling and not d.ready
        for _ in range(2):                                        # the job's calls while it is paused
            assert torch.equal(call(unet, x, t, ctx), expected)
        assert d.calls == {"eager": 3, "compiled": 0, "refused": 0} and gate.pauses == 1
        gate.set_busy(False)
        assert d.wait(WAIT) and d.ready, d.failed
        assert seen == ["compiling", "compile_paused", "compiling", "compiled"]
        timing = next(iter(d.timings.values()))
        assert timing["pauses"] == 1 and timing["paused_seconds"] > 0
        torch.testing.assert_close(call(unet, x, t, ctx), expected, rtol=1e-4, atol=1e-4)
        assert d.calls["compiled"] == 1
    finally:
        unet_compile.uninstall(unet)


def test_the_gate_pauses_a_compiling_thread_only_where_no_lock_of_a_job_can_be_held():
    """The pausing trace function stops the compiling thread at a call in the compiler's code, never
    inside a logging handler (or an import, a condition, a queue) whose lock a job may need: here the
    compiling thread logs through a handler that itself runs compiler code, and the job's thread logs to
    the same handler while the compilation is paused."""
    import logging
    import threading

    import torch.fx

    from core.models.compile_gate import CompileGate

    gate = CompileGate(settle=0.0)
    events, stop, inside_handler = [], threading.Event(), threading.Event()

    class CompilerInHandler(logging.Handler):
        def emit(self, record):
            if threading.current_thread().name == "fake-compile":
                inside_handler.set()
                torch.fx.Graph()          # compiler code, but under the handler's lock
                inside_handler.clear()

    log = logging.getLogger("dd-test-gate")
    log.propagate = False
    handler = CompilerInHandler()
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    made = [0]

    def compile_like():
        with gate.turn(on_pause=lambda paused: events.append(paused)):
            while not stop.is_set():
                log.info("lowering a node")
                torch.fx.Graph()          # where it may stop
                made[0] += 1

    thread = threading.Thread(target=compile_like, name="fake-compile", daemon=True)
    try:
        thread.start()
        assert wait_for(lambda: made[0] > 3, 60)
        gate.set_busy(True)
        assert wait_for(lambda: events == [True], 60)
        assert not inside_handler.is_set()          # it stopped outside the handler...
        log.info("the job's own log line")          # ...so the job can log (this would hang otherwise)
        before = made[0]
        time.sleep(0.2)
        assert made[0] == before                    # and it makes no progress while paused
        gate.set_busy(False)
        assert wait_for(lambda: events == [True, False] and made[0] > before, 60)
    finally:
        stop.set()
        gate.set_busy(False)
        thread.join(60)
        log.removeHandler(handler)
    assert not thread.is_alive()


def test_inductor_caches_in_the_app_cache_folder_unless_told_otherwise(monkeypatch, tmp_path):
    monkeypatch.setenv("DD_CACHE_DIR", str(tmp_path / "app-cache"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    env.inductor_cache()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "app-cache" / "inductor")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/elsewhere")
    env.inductor_cache()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/elsewhere"


def test_the_benchmark_times_the_compiled_step_through_the_dispatcher(unet):
    """Row 1's compiled variant (``--quick --smoke`` skips it: minutes on the real UNet)."""
    from core.devtools.bench.unet import time_compiled

    got = time_compiled(unet, 2, 64, 2)
    assert got["compile_s"] > 0 and len(got["step_all_s"]) == 2 and got["step_s"] == min(got["step_all_s"])
    assert unet_compile.installed(unet) is None                 # the UNet is left as it was
