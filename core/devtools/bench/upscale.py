"""Row 4: the tiled ×4 upscale keeps its memory flat as the input grows (peak RSS per input size, each
in a fresh process, and time per output megapixel); and the tile-size tuning behind ``Options.tile``.

Each measurement runs in its own process (``core.devtools.bench.child``); the peak is the process's highest RSS
during the job (Linux VmHWM, restarted after loading), so it is the job's own plus what was loaded.
``scripts/bench_upscale.py`` is a thin command line over ``sweep``.
"""

from __future__ import annotations

from .child import run_child
from .common import Row, fmt_s, gib, n_steps
from .profiles import Profile

DEFAULT_STEPS = 25          # Params.steps: what an artist runs
REFERENCE_INPUT = 1024      # tile costs are compared on the tile plan of this input side


_reused: dict[str, object] = {}


def upscale_job(size: int, tile: int, steps: int, models_dir: str, reuse: bool = False,
                width: int | None = None) -> dict:
    """Child: load the x4 model, upscale a BGRA U8 image (``width`` × ``size``, square by default),
    report time, tiles and memory.  ``reuse``: keep the loaded model for the next call (one process)."""
    from pathlib import Path

    from ...contract.jobs import ImageBuffer, JobRequest, Options, Params
    from ...pipelines import run_job
    from . import machine
    from .common import model_manager, noise_image, now, watch_pipe

    mm = _reused.get(models_dir) if reuse else None
    if mm is None:
        mm = model_manager(Path(models_dir))
        if reuse:
            _reused[models_dir] = mm
    pipe = mm.get("upscale").pipe
    machine.release_freed_memory()
    loaded = machine.rss_bytes()
    machine.reset_peak_rss()
    w = width or size
    img = noise_image(w, size, seed=size)
    req = JobRequest("upscale", Params(prompt="detailed photo", steps=steps, seed=1, guidance=7.5), Options(tile=tile),
                     image=ImageBuffer(w, size, "BGRA_U8", img.tobytes()))
    timer = watch_pipe(pipe)
    t = now()
    res = run_job(req, mm)
    seconds = now() - t
    timer.close()
    return {"size": size, "tile": tile, "steps": steps, "seconds": seconds, "tiles": res.timings["tiles"],
            "rss_loaded": loaded, "peak_rss": machine.peak_rss_bytes(),
            "unet_calls": timer.count("unet"), "unet_s": timer.total("unet"),
            "vae_decode_s": timer.total("vae_decode"), "text_encoding_s": timer.total("text_encoder"),
            "unet_last_s": timer.times["unet"][-1], "vae_decode_last_s": timer.times["vae_decode"][-1],
            "vae_decodes": timer.count("vae_decode"), "width": w, "out_mpx": 16 * w * size / 1e6}


def measure(size: int, tile: int, steps: int, models_dir, inline: bool = False) -> dict:
    kwargs = {"size": size, "tile": tile, "steps": steps, "models_dir": str(models_dir)}
    return run_child("core.devtools.bench.upscale:upscale_job", {**kwargs, "reuse": True} if inline else kwargs, inline=inline)


def sweep(sizes, tile: int, steps: int, models_dir, log=print, inline: bool = False) -> list[dict]:
    out = []
    for size in sizes:
        m = measure(size, tile, steps, models_dir, inline)
        m["s_per_out_mpx"] = m["seconds"] / m["out_mpx"]
        log(f"row 4: {size}² → {4 * size}², tile {tile}: {m['tiles']} tiles, {fmt_s(m['seconds'])}, "
            f"peak {gib(m['peak_rss'])} (loaded {gib(m['rss_loaded'])})")
        out.append(m)
    return out


def run(profile: Profile, models_dir, log) -> Row:
    results = sweep(profile.x4_sizes, profile.x4_tile, profile.x4_steps, models_dir, log, inline=profile.tiny)
    by = {m["size"]: m for m in results}
    large = max(by)
    base = large // 4 if large // 4 in by else min(by)
    ratio = by[large]["peak_rss"] / by[base]["peak_rss"]
    extra = {s: m["peak_rss"] - m["rss_loaded"] for s, m in by.items()}
    title = f"Upscaling memory stays flat (×4, tile {profile.x4_tile}, {n_steps(profile.x4_steps)} per tile)"
    row = Row(4, title,
              f"peak RSS {large}²: {gib(by[large]['peak_rss'])} vs {base}²: {gib(by[base]['peak_rss'])} = "
              f"**{ratio:.3f}×**", f"peak at {large}² ≤ 1.15× the peak at {base}²", ratio <= 1.15,
              {"runs": results, "ratio": ratio, "tile": profile.x4_tile, "steps": profile.x4_steps})
    for s in sorted(by):
        m = by[s]
        row.notes.append(f"{s}² → {4 * s}²: {m['tiles']} tiles, {fmt_s(m['seconds'])} = {fmt_s(m['s_per_out_mpx'])} "
                         f"per output megapixel; peak {gib(m['peak_rss'])}, of which the job {gib(extra[s])}")
    return row


def tile_plan_count(side: int, tile: int) -> int:
    from ...pipelines.upscale import TILE_MULTIPLE
    from ...raster.tiling import plan_tiles

    return len(plan_tiles(side, side, tile, multiple=TILE_MULTIPLE))


def tune(profile: Profile, models_dir, log) -> dict:
    """Each candidate tile size on an input two tiles wide, all in one fresh process after an untimed
    warm-up tile, at 2 steps or more: a warm UNet call (the last one) and a warm VAE decode (the second
    tile's) give the cost of one tile at the default step count; the cost of upscaling a
    REFERENCE_INPUT² image follows from its tile plan (how many tiles of that size cover it, overlaps
    included).  Also the job's peak memory for each size."""
    steps = max(2, profile.x4_steps)
    jobs = [(tile, tile, (tile + tile // 2) // 8 * 8) for tile in profile.tile_candidates]
    measured = run_child("core.devtools.bench.upscale:tune_jobs", {"jobs": jobs, "steps": steps,
                                                          "models_dir": str(models_dir)}, inline=profile.tiny)
    rows = []
    for tile, m in zip(profile.tile_candidates, measured["runs"], strict=True):
        per_call = m["unet_last_s"]
        decode = m["vae_decode_last_s"]
        other = (m["seconds"] - m["unet_s"] - m["vae_decode_s"] - m["text_encoding_s"]) / max(1, m["tiles"])
        per_tile = DEFAULT_STEPS * per_call + decode + other
        n = tile_plan_count(REFERENCE_INPUT, tile)
        total = n * per_tile
        mpx = (4 * REFERENCE_INPUT) ** 2 / 1e6
        rows.append({"tile": tile, "unet_call_s": per_call, "vae_decode_s": decode,
                     "other_s": other, "per_tile_s": per_tile, "tiles_for_reference": n,
                     "reference_s": total, "s_per_out_mpx": total / mpx, "peak_rss": m["peak_rss"],
                     "job_rss": m["peak_rss"] - m["rss_loaded"], "measured": m})
        log(f"tile {tile}: UNet call {fmt_s(per_call)}, VAE decode {fmt_s(decode)} (warm); "
            f"{n} tiles for {REFERENCE_INPUT}² → {fmt_s(total / mpx)} per output megapixel at {DEFAULT_STEPS} steps; "
            f"job peak {gib(m['peak_rss'] - m['rss_loaded'])}")
    best = min(rows, key=lambda r: r["s_per_out_mpx"])
    return {"candidates": rows, "best": best["tile"], "reference_input": REFERENCE_INPUT,
            "default_steps": DEFAULT_STEPS, "steps_measured": steps}


def tune_jobs(jobs: list, steps: int, models_dir: str) -> dict:
    """Child: one model load, a warm-up tile, then one upscale job per (input height, tile, input width)."""
    upscale_job(min(64, jobs[0][0]), 64, 1, models_dir, reuse=True)
    return {"runs": [upscale_job(size, tile, steps, models_dir, reuse=True, width=width)
                     for size, tile, width in jobs]}
