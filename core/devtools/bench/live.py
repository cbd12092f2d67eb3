"""Row 10: a Live frame's latency, from the request to the preview on the canvas.

One SD-Turbo frame (1 step at strength 0.5, no guidance, the prompt's embedding cached as in a Live
session, new pixels every frame so that no VAE encode is reused) on a layer of 512² and of 384² (the
working size forced to the layer's: on the CPU Live itself would work at 384²), with the tiny
autoencoder TAESD and with the full VAE, split into:

- encode: pixels → latents (TAESD's encoder or the VAE's);
- UNet: the denoising call (the UNet step, the scheduler, the cached text embedding);
- decode: latents → pixels;
- transfer: everything else between the dock and the canvas: the request through a real engine
  process and back (framing, shared memory or the pipe, validation, the region's crop and scaling, the
  patch in the layer's layout), measured with the tiny models at the same layer size with the engine's
  job time subtracted, plus the patch drawn over a canvas image with QPainter (the editor's preview).

Full-size SD-Turbo (the 2.1-base architecture) and TAESD (``AutoencoderTiny``'s default configuration)
with random weights are built once beside the other benchmark models.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager

from .common import Row, fmt_s, noise_image, now
from .profiles import Profile

GOAL_S = 2.5
PROMPT = "a glass vase on a wooden table, soft light"


def live_request(side: int, seed: int, vae: str):
    from ...contract.jobs import ImageBuffer, JobRequest, Options, Params

    img = noise_image(side, side, seed=seed)
    return JobRequest("live", Params(prompt=PROMPT, steps=1, strength=0.5, seed=1), Options(vae=vae),
                      image=ImageBuffer(side, side, "BGRA_U8", img.tobytes()))


@contextmanager
def working_size(side: int):
    """Live at ``side``² whatever the device (the row compares sizes; Live itself picks by device)."""
    from ...pipelines import live

    original = live.live_native
    live.live_native = lambda native, device: side
    try:
        yield
    finally:
        live.live_native = original


def ensure_models(profile: Profile, root, tiny_root) -> None:
    """SD-Turbo and TAESD beside the benchmark's other models, full size (unless the profile is tiny)
    and tiny (for the transfer's round trips); each is built once and then reused."""
    from ..tiny_models import KIND_KEYS, build

    for kind in ("turbo", "taesd"):
        build(kind, tiny_root / KIND_KEYS[kind], variant="fp16")
        if not profile.tiny:
            build(kind, root / KIND_KEYS[kind], full=True, variant="fp16")


def frames(profile: Profile, models, log) -> dict:
    """{side: {"tiny" | "full": best frame's split}} in this process."""
    from ...pipelines import run_job

    out: dict = {}
    seed = 100
    for side in profile.live_sizes:
        out[str(side)] = {}
        with working_size(side):
            for vae in ("tiny", "full"):
                runs = []
                for i in range(1 + max(1, profile.live_repeats)):     # the first is a warm-up
                    seed += 1
                    t = now()
                    res = run_job(live_request(side, seed, vae), models)
                    total = now() - t
                    tm = res.timings
                    if tm["autoencoder"] != vae:
                        raise RuntimeError(f"asked for the {vae} autoencoder, the job used the {tm['autoencoder']} one")
                    run = {"job_s": total, "encode_s": tm["encode_s"], "unet_s": tm["denoise_s"],
                           "decode_s": tm["decode_s"], "model_size": tm["model_size"]}
                    run["rest_s"] = total - run["encode_s"] - run["unet_s"] - run["decode_s"]
                    if i:
                        runs.append(run)
                best = min(runs, key=lambda r: r["job_s"])
                best["all_job_s"] = [r["job_s"] for r in runs]
                out[str(side)][vae] = best
                log(f"row 10: {side}² {vae}: job {fmt_s(best['job_s'])} (encode {fmt_s(best['encode_s'])}, UNet "
                    f"{fmt_s(best['unet_s'])}, decode {fmt_s(best['decode_s'])})")
    return out


def through_engine(profile: Profile, tiny_root, log) -> dict:
    """{side: seconds} of a frame's round trip through a real engine process minus the engine's job
    time: what carrying the request and the result costs (tiny models, the same layer size)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import asyncio

    import qasync
    from PyQt6.QtCore import QCoreApplication

    from ...contract.events import Finished
    from ...link.client import EngineClient
    from .child import ROOT

    app = QCoreApplication.instance() or QCoreApplication([])
    loop = qasync.QEventLoop(app)
    env = {"DD_MODELS_DIR": str(tiny_root), "DD_LOG_DIR": tempfile.mkdtemp(prefix="dd-bench-logs-")}
    out: dict = {}

    async def go():
        async with EngineClient(cwd=ROOT, env=env) as client:
            warm = await client.submit(live_request(64, 1, "tiny"), previews=False).wait()
            if not isinstance(warm, Finished):
                raise RuntimeError(f"warm-up frame failed: {warm}")
            for side in profile.live_sizes:
                best = float("inf")
                for i in range(max(1, profile.live_repeats)):
                    await asyncio.sleep(0.05)
                    t = now()
                    final = await client.submit(live_request(side, 50 + i, "tiny"), previews=False).wait()
                    total = now() - t
                    if not isinstance(final, Finished):
                        raise RuntimeError(f"frame failed: {final}")
                    best = min(best, total - float(final.result.timings["seconds"]))
                out[str(side)] = best
                log(f"row 10: {side}² frame carried dock → engine → dock in {fmt_s(best)}")
        return out

    try:
        return loop.run_until_complete(go())
    finally:
        loop.close()


def canvas_draw(side: int, repeats: int = 3) -> float:
    """Seconds to draw a ``side``² BGRA patch over a canvas image, as the editor shows its preview."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PyQt6.QtCore import QCoreApplication
    from PyQt6.QtGui import QImage, QPainter

    QCoreApplication.instance() or QCoreApplication([])
    data = noise_image(side, side, seed=3).tobytes()
    canvas = QImage(side * 2, side * 2, QImage.Format.Format_ARGB32_Premultiplied)
    best = float("inf")
    for _ in range(repeats):
        t = now()
        patch = QImage(data, side, side, side * 4, QImage.Format.Format_ARGB32).copy()
        painter = QPainter(canvas)
        painter.drawImage(side // 2, side // 2, patch)
        painter.end()
        best = min(best, now() - t)
    return best


def run(profile: Profile, root, tiny_root, models, log) -> Row:
    ensure_models(profile, root, tiny_root)
    carried = through_engine(profile, tiny_root, log)     # first: a minute, before the long frames
    split = frames(profile, models, log)
    for side, by_vae in split.items():
        transfer = carried[side] + canvas_draw(int(side))
        for best in by_vae.values():
            best["transfer_s"] = transfer
            best["total_s"] = best["job_s"] + transfer
    big = str(max(profile.live_sizes))
    goal_s = GOAL_S if not profile.tiny else GOAL_S
    tiny_big = split[big]["tiny"]["total_s"]
    cells = "; ".join(f"{side}²: tiny **{fmt_s(v['tiny']['total_s'])}**, full VAE {fmt_s(v['full']['total_s'])}"
                      for side, v in split.items())
    row = Row(10, "Live frame latency (SD-Turbo, 1 step)", cells, f"≤ {goal_s:g} s at {big}² with the tiny decoder",
              tiny_big <= goal_s, {"frames": split, "carried_s": carried, "goal_s": goal_s})
    for side, v in split.items():
        for vae, b in v.items():
            row.notes.append(f"{side}² {'TAESD' if vae == 'tiny' else 'full VAE'}: encode {fmt_s(b['encode_s'])}, UNet "
                             f"{fmt_s(b['unet_s'])}, decode {fmt_s(b['decode_s'])}, transfer {fmt_s(b['transfer_s'])} "
                             f"(region and patch in the engine {fmt_s(b['rest_s'])}) = {fmt_s(b['total_s'])}")
    row.notes.append("transfer: the frame through a real engine process and back (tiny models, engine job time "
                     "subtracted) plus the patch drawn over a canvas image; a frame's pixels are new each time "
                     "(no VAE encode reused), its prompt embedding cached as in a Live session")
    return row
