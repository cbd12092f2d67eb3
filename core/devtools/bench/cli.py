"""Command line of the benchmark: which rows, in which order, and where the results go."""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

from ...contract import atomic
from ...models import env
from . import machine
from .common import Row, models_root
from .profiles import SMOKE
from .profiles import profile as choose_profile
from .report import markdown, write_json, write_section

ROOT = Path(__file__).resolve().parents[3]
ROWS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)
TITLES = {1: "UNet step against the floor", 2: "End to end against stock diffusers", 3: "Canvas size does not matter",
          4: "Upscaling memory stays flat", 5: "The editor round trip is cheap", 6: "Shared components save memory",
          7: "Cold start", 8: "Previews are nearly free", 9: "Expand costs about an inpaint of its size",
          10: "Live frame latency", 11: "A control costs part of a step",
          12: "A reference image costs one more UNet pass"}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m core.devtools.bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="the 15-minute version (smaller sizes and fewer steps)")
    ap.add_argument("--smoke", action="store_true", help="with --quick: every row on the tiny test models")
    ap.add_argument("--rows", type=int, nargs="+", choices=ROWS, default=list(ROWS), help="rows to run (default all)")
    ap.add_argument("--compile", action="store_true",
                    help="with --quick: also time the compiled UNet in row 1 (2-3.5 min of compiling; the full run "
                         "always does)")
    ap.add_argument("--no-tune", action="store_true", help="skip the x4 tile-size comparison")
    ap.add_argument("--models", type=Path, help="folder with sd2-inpainting/, sd2-depth/, sd2-x4-upscaler/ "
                                                 "(default: built once into the cache folder)")
    ap.add_argument("--docs", type=Path, help="Markdown file to write the section into "
                                              "(default docs/benchmarks.md; none with --smoke)")
    ap.add_argument("--json", type=Path, help="JSON file of raw figures (default docs/benchmarks.json; none with --smoke)")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        profile = choose_profile(args.quick, args.smoke)
    except ValueError as e:
        print(f"python -m core.devtools.bench: {e}", file=sys.stderr)
        return 2
    if args.compile and not profile.tiny:
        profile = replace(profile, compiled_step=True)
    for report in (args.docs, args.json):       # before the run, not after an hour of it
        try:
            if report:
                atomic.check_writable(report)
        except atomic.WriteError as e:
            print(f"python -m core.devtools.bench: error: {e}", file=sys.stderr)
            return 2
    env.apply()
    if profile.tiny:
        # Tiny models gain nothing from a second thread, and on a busy machine OpenMP threads waiting
        # for a core make every small op slow: the smoke run (a CI test) stays quick and steady.
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:7.1f} s] {msg}", file=sys.stderr, flush=True)

    loads = {"start": machine.load_average()}
    facts = machine.facts()
    log(f"{profile.name} run on {machine.describe(facts)}; load {loads['start']}")
    root = models_root(profile, args.models)
    tiny_root = root if profile.tiny else models_root(SMOKE)
    log(f"models: {root}")
    rows: list[Row] = []
    policy: dict = {}
    wanted = set(args.rows)

    def attempt(numbers, fn):
        if not wanted & set(numbers):
            return
        try:
            fn()
        except Exception as e:  # a broken row is reported as such; the others still run
            log(f"rows {numbers} failed: {type(e).__name__}: {e}")
            traceback.print_exc(file=sys.stderr)
            for n in numbers:
                if n in wanted and not any(r.number == n for r in rows):
                    rows.append(Row(n, TITLES[n], f"error: {type(e).__name__}: {str(e)[:200]}", "–", False))

    # Engine processes and fresh child processes first, while this process holds no big model.
    def row7():
        from . import coldstart

        rows.append(coldstart.run(profile, root, log))

    def row5():
        from . import roundtrip

        rows.append(roundtrip.run(profile, tiny_root, None, log))
        policy["pixels"] = pixel_speed(profile)

    def row6():
        from . import sharing

        row, memory = sharing.run(profile, root, log)
        rows.append(row)
        policy["memory"] = memory

    def row4():
        from . import upscale

        rows.append(upscale.run(profile, root, log))
        if not args.no_tune:
            policy["x4_tile"] = upscale.tune(profile, root, log)

    attempt([7], row7)
    attempt([5], row5)
    attempt([6], row6)
    attempt([4], row4)

    models = None

    def get_models():
        nonlocal models
        if models is None:
            from .common import model_manager

            models = model_manager(root)
        return models

    def row1():
        from . import unet

        row, pol = unet.run(profile, get_models(), log)
        rows.append(row)
        policy.update(pol)

    def row28():
        from . import stock

        row2, row8, pol = stock.run(profile, get_models(), log)
        rows.extend(r for r in (row2, row8) if r.number in wanted)
        policy.update(pol)

    def row3():
        from . import canvas

        row, pol = canvas.run(profile, get_models(), log)
        rows.append(row)
        policy.update(pol)

    def row9():
        from . import expand

        rows.append(expand.run(profile, get_models(), log))

    def row10():
        from . import live

        rows.append(live.run(profile, root, tiny_root, get_models(), log))

    def row11():
        from . import control

        rows.append(control.run(profile, get_models(), log))

    def row12():
        from . import reference

        rows.append(reference.run(profile, get_models(), log))

    attempt([1], row1)
    gc.collect()
    attempt([11], row11)
    gc.collect()
    attempt([12], row12)
    gc.collect()
    attempt([2, 8], row28)
    gc.collect()
    attempt([3], row3)
    gc.collect()
    attempt([9], row9)
    gc.collect()
    attempt([10], row10)

    loads["end"] = machine.load_average()
    seconds = time.perf_counter() - t_start
    text = markdown(profile, facts, loads, rows, policy, seconds)
    print(text)
    docs = args.docs or (None if profile.tiny else ROOT / "docs" / "benchmarks.md")
    js = args.json or (None if profile.tiny else ROOT / "docs" / "benchmarks.json")
    data = {"profile": profile.as_dict(), "machine": facts, "load_average": loads, "seconds": seconds,
            "rows": [r.as_dict() for r in sorted(rows, key=lambda r: r.number)], "policy": policy}
    try:
        if docs:
            write_section(docs, text)
            log(f"wrote {docs}")
        if js:
            write_json(js, data)
            log(f"wrote {js}")
    except atomic.WriteError as e:      # the table is on stdout above: the figures are not lost
        print(f"python -m core.devtools.bench: error: {e}", file=sys.stderr)
        return 2
    log(f"done in {seconds:.0f} s; load {loads['end']}")
    # A goal missed is a finding, not a failure of the command; a row that could not run is.
    return 1 if any(r.measured.startswith("error") for r in rows) else 0


def pixel_speed(profile) -> dict:
    """The layer conversions against their reference formulas (the speed-up of banded conversions)."""
    from ...raster import pixels
    from .common import noise_image, now

    side = profile.layer
    out = {}
    img = noise_image(side, side, seed=7)
    for fmt, linear in (("BGRA_U8", False), ("RGBA_F32", True)):
        native = img if fmt == "BGRA_U8" else pixels.from_working(pixels.to_working(img, "BGRA_U8"), fmt, linear)
        times = {}
        for name, to_w, from_w in (("reference", pixels.to_working_reference, pixels.from_working_reference),
                                   ("fast", pixels.to_working, pixels.from_working)):
            best = float("inf")
            for _ in range(2):
                t = now()
                from_w(to_w(native, fmt, linear), fmt, linear)
                best = min(best, now() - t)
            times[f"{name}_s"] = best
        out[f"{fmt}{' linear' if linear else ''} {side}² there and back"] = times
    return out
