"""Does compiling the UNet in the background slow the artist's running job?  (Issue 22.2: at most 15%.)

``python -m core.devtools.bench.background [--pairs N] [--size 512]``: the full-size random-weight
inpaint UNet (the benchmark's models) takes eager guided steps while the engine's background
compilation of its shape (``core/models/unet_compile.py`` through the engine's ``CompileGate``, on a
cold inductor cache: a fresh folder) alternately runs and is paused.  The steps are taken in pairs,
one with the compilation running and one with it paused, in alternating order, so that the other load
of a shared machine falls on both alike; the table gives each pair's ratio and their median.

Pausing is the gate's own (the compiling thread stops at its next call into the compiler's Python code;
a C++ compiler already started finishes its file at the lowest priority), so "paused" is what a job
sees under the idle-only policy, and "running" what it would see if compilations ran beside jobs (the
compiling thread and the C++ compilers it starts at the lowest CPU priority, as the gate runs them).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.devtools.bench.background", description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=6, help="step pairs (running, paused) to time (default 6)")
    ap.add_argument("--size", type=int, default=512, help="image side in px (default 512)")
    ap.add_argument("--wait", type=float, default=0.0,
                    help="seconds to let the compilation finish after the pairs, to time it (default 0: stop)")
    ap.add_argument("--smoke", action="store_true", help="the tiny test models (tests the script only)")
    args = ap.parse_args(argv)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="dd-bench-cold-inductor-")

    import torch

    from ...models.compile_gate import CompileGate
    from ...models.unet_compile import install, uninstall
    from .common import model_manager, models_root
    from .profiles import QUICK, SMOKE
    from .unet import step_inputs

    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:7.1f} s] {msg}", file=sys.stderr, flush=True)

    unet = model_manager(models_root(SMOKE if args.smoke else QUICK)).get("inpaint").pipe.unet
    x, t, ctx = step_inputs(unet, 2, args.size, unet.dtype)
    states: list[str] = []
    gate = CompileGate(settle=0.0)
    gate.set_busy(True)
    d = install(unet, gate=gate, on_status=lambda state, detail: states.append(state))

    def step(fn) -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            fn(x, t, encoder_hidden_states=ctx, return_dict=False)
        return time.perf_counter() - t0

    rows = []
    try:
        alone = step(d.eager)                      # warm-up, no compilation yet
        log(f"warm-up step {alone:.2f} s; load {os.getloadavg()[0]:.1f}")
        step(unet)                                 # the first call of the shape: its compilation waits at the gate
        for i in range(args.pairs):
            if not d.compiling:
                break
            pair = {}
            for cond in (("running", "paused") if i % 2 == 0 else ("paused", "running")):
                gate.set_busy(cond == "paused")
                if cond == "running":
                    deadline = time.monotonic() + 60
                    while "compiling" not in states and time.monotonic() < deadline:
                        time.sleep(0.05)
                    time.sleep(0.5)                # let it get going again
                else:
                    time.sleep(0.5)                # let it reach a pause
                pair[cond] = step(d.eager)
            pair["load"] = os.getloadavg()[0]
            pair["still_compiling"] = d.compiling
            rows.append(pair)
            log(f"pair {i + 1}: running {pair['running']:.2f} s, paused {pair['paused']:.2f} s "
                f"({pair['running'] / pair['paused']:.2f}×); load {pair['load']:.1f}")
        gate.set_busy(False)
        t0 = time.perf_counter()
        if args.wait > 0 and d.wait(args.wait):
            log(f"compilation finished {time.perf_counter() - t0:.0f} s after the last pair; {d.timings}")
    finally:
        gate.set_busy(False)
        uninstall(unet)
    ratios = [r["running"] / r["paused"] for r in rows]
    print(f"\nBackground compilation beside a running job: full-size inpaint UNet, guided step at {args.size}², "
          f"{unet.dtype}, cold inductor cache\n")
    print("| pair | step, compiling beside it | step, compilation paused | ratio | load (1 min) |")
    print("|---|---|---|---|---|")
    for i, (r, q) in enumerate(zip(rows, ratios), 1):
        print(f"| {i} | {r['running']:.2f} s | {r['paused']:.2f} s | {q:.2f}× | {r['load']:.1f} |")
    if ratios:
        med = statistics.median(ratios)
        verdict = "within" if med <= 1.15 else "beyond"
        print(f"\nmedian {med:.2f}× (min {min(ratios):.2f}×, max {max(ratios):.2f}×): {verdict} the 15% a running job "
              f"may lose")
    return 0


if __name__ == "__main__":
    sys.exit(main())
