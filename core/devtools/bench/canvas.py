"""Row 3: a small selection costs the same in any canvas.  A 256² selection is inpainted in canvases of
512², 2048² and 8192², counting all engine-side work: reading the request frame, validating it, the
job, putting the result in the request's layout and encoding the result frame.  What reaches the model
is recorded (VAE and UNet input shapes): the selected region only, the same for every canvas.

The request reaches the engine as it does from a local dock: its large payloads (the layer and the
mask) through shared-memory files when this machine has them (core.link.bulk), so the engine maps them.
The model's share of a job is the same work for every canvas but varies by ±10% from one job to the
next on a shared machine, so the goal's two canvases (the smallest and the largest) are timed in every
round, in alternating order, and the best of the rounds counts; the canvases between, in the first."""

from __future__ import annotations

import io

from .common import Row, clear_job_caches, fmt_s, inpaint_request, n_steps, now, square_mask, watching
from .profiles import Profile


def canvas_rounds(canvases: tuple[int, ...], rounds: int) -> list[tuple[int, ...]]:
    """The canvases timed in each round: all of them first, then the smallest and the largest, in
    alternating order (a machine slowing down or speeding up during the row favours neither)."""
    ends = (min(canvases), max(canvases))
    return [tuple(canvases)] + [ends[::-1] if r % 2 else ends for r in range(1, rounds)]


def engine_side(models, frame: bytes, where: str | None = None) -> tuple[float, dict, object]:
    """Everything the engine does for one submit frame, as the engine does it (model already loaded);
    ``where``: the shared-memory folder the frame's large payloads were offloaded to."""
    from ...contract.jobcontrol import JobControl
    from ...contract.jobs import validate
    from ...engine.service import in_request_layout
    from ...link import bulk
    from ...link import protocol as P
    from ...pipelines import run_job

    read = io.BytesIO(frame).read
    t0 = now()
    msg = bulk.restore(P.read_message(read), where, mapped=True)
    req = validate(P.request_of(msg))
    t1 = now()
    res = in_request_layout(req, run_job(req, models, JobControl()))
    t2 = now()
    chunks = P.encode(P.result("bench", res))
    sum(len(c) for c in chunks)
    t3 = now()
    return t3 - t0, {"read_validate_s": t1 - t0, "job_s": t2 - t1, "result_encode_s": t3 - t2}, res


def run(profile: Profile, models, log) -> tuple[Row, dict]:
    from ...link import bulk
    from ...link import protocol as P

    pipe = models.get("inpaint").pipe
    where, names = bulk.directory(), set()
    per_canvas: dict[int, dict] = {}
    for rnd, sides in enumerate(canvas_rounds(profile.canvases, profile.canvas_rounds)):
        for side in sides:
            req = inpaint_request(side, side, square_mask(side, side, profile.selection), steps=profile.canvas_steps)
            msg = bulk.offload_or_pipe(P.submit("bench", req), where, names)
            frame = b"".join(bytes(c) for c in P.encode(msg))
            del req, msg
            clear_job_caches()  # every job does its text and VAE encodes: the same model work each time
            try:
                with watching(pipe) as timer:
                    total, parts, res = engine_side(models, frame, where)
            finally:
                bulk.discard(where, names)
            del frame
            seen = {"vae_encoder_inputs": [list(s) for s in timer.shapes["vae_encode"]],
                    "unet_inputs": sorted({tuple(s) for s in timer.shapes["unet"]}),
                    "region": res.timings.get("region"), "model_size": res.timings.get("model_size"),
                    "patch": [res.patches[0].image.width, res.patches[0].image.height]}
            seen["unet_inputs"] = [list(s) for s in seen["unet_inputs"]]
            log(f"row 3: canvas {side}² round {rnd + 1}: {fmt_s(total)} (region {seen['region']}, "
                f"model {seen['model_size']})")
            best = per_canvas.get(side)
            all_s = [*(best["all_s"] if best else []), total]
            if best is None or total < best["total_s"]:
                per_canvas[side] = {"total_s": total, **parts, **seen}
            per_canvas[side]["all_s"] = all_s
    small, large = min(profile.canvases), max(profile.canvases)
    ratio = per_canvas[large]["total_s"] / per_canvas[small]["total_s"]
    same_model_work = len({str(v["vae_encoder_inputs"]) + str(v["unet_inputs"]) for v in per_canvas.values()}) == 1
    mw, mh = per_canvas[small]["model_size"]
    per_px = per_canvas[small]["job_s"] / (mw * mh)
    whole = per_px * large * large
    figures = {"canvases": {str(k): v for k, v in per_canvas.items()}, "ratio": ratio,
               "same_model_inputs_for_every_canvas": same_model_work, "selection": profile.selection,
               "steps": profile.canvas_steps, "whole_image_s_estimate": whole, "per_model_px_s": per_px}
    title = f"Canvas size does not matter ({profile.selection}² selection, {n_steps(profile.canvas_steps)})"
    row = Row(3, title,
              f"{large}²: {fmt_s(per_canvas[large]['total_s'])} vs {small}²: {fmt_s(per_canvas[small]['total_s'])} "
              f"= **{ratio:.3f}×**; the model saw {per_canvas[small]['vae_encoder_inputs'][0]} for every canvas",
              "≤ 1.10×", ratio <= 1.10 and same_model_work, figures)
    row.notes.append(f"whole-image inpainting at {large}² (computed, not run): the model cost of "
                     f"{fmt_s(per_px * 1e6)} per megapixel at {mw}×{mh} scales to ≥ {fmt_s(whole)} for {large}² "
                     f"({large * large / (mw * mh):.0f}× the pixels; a lower bound, attention grows faster)")
    for side in profile.canvases:
        v = per_canvas[side]
        row.notes.append(f"{side}²: read+validate {fmt_s(v['read_validate_s'])}, job {fmt_s(v['job_s'])}, "
                         f"result {fmt_s(v['result_encode_s'])}; region {v['region']}")
    return row, {"region_only": {"ratio": ratio, "whole_image_s": whole, "same_inputs": same_model_work}}
