"""Row 6: inpaint, depth and x4 loaded into one engine share their identical components (text encoder,
tokenizer, the 512 models' VAE); compared with the three loaded separately, each in its own process.
The same processes check the memory policy: what loading adds to RSS against the bytes of the tensors
actually loaded (a dtype-cast copy or a lingering state dict would show as the difference)."""

from __future__ import annotations

from .child import run_child
from .common import Row, gib
from .profiles import Profile

WHAT = {"inpaint": ("inpaint", {}), "depth": ("restyle", {"without_depth_estimator": True}),
        "x4": ("upscale", {})}


def tensor_bytes(modules) -> int:
    """Bytes of the distinct tensors (parameters and buffers) of ``modules``, shared storages once."""
    seen, total = set(), 0
    for m in modules:
        for t in list(m.parameters()) + list(m.buffers()):
            key = t.untyped_storage().data_ptr()
            if key in seen:
                continue
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


def load_child(models_dir: str, which: list[str]) -> dict:
    """Child: import the libraries, then load ``which`` into one model cache and report memory."""
    from pathlib import Path

    from ...models.loader import pipeline_class, quiet_libraries
    from . import machine
    from .common import model_manager, now

    quiet_libraries()
    for name in ("StableDiffusionInpaintPipeline", "StableDiffusionDepth2ImgPipeline",
                 "StableDiffusionUpscalePipeline"):
        pipeline_class(name)
    mm = model_manager(Path(models_dir), capacity=len(which) + 1)
    mm.policy  # noqa: B018  (probe the device before the baseline)
    machine.release_freed_memory()
    base = machine.rss_bytes()
    machine.reset_peak_rss()
    t = now()
    pipes = []
    shared = {}
    for w in which:
        mode, kw = WHAT[w]
        loaded = mm.get(mode, **kw)
        pipes.append(loaded.pipe)
        shared[w] = list(loaded.shared)
    seconds = now() - t
    machine.release_freed_memory()
    after = machine.rss_bytes()
    modules = [getattr(p, c) for p in pipes for c in ("unet", "text_encoder", "vae") if getattr(p, c, None) is not None]
    return {"which": which, "rss_base": base, "rss_loaded": after, "peak_rss": machine.peak_rss_bytes(),
            "tensor_bytes": tensor_bytes(modules), "seconds": seconds, "shared": shared,
            "dtypes": {w: str(p.unet.dtype) for w, p in zip(which, pipes)}}


def run(profile: Profile, models_dir, log) -> tuple[Row, dict]:
    apart = {}
    for w in WHAT:
        apart[w] = run_child("core.devtools.bench.sharing:load_child", {"models_dir": str(models_dir), "which": [w]},
                             inline=profile.tiny)
        a = apart[w]
        log(f"row 6: {w} alone: RSS {gib(a['rss_loaded'])} (libraries {gib(a['rss_base'])}, tensors "
            f"{gib(a['tensor_bytes'])})")
    together = run_child("core.devtools.bench.sharing:load_child", {"models_dir": str(models_dir), "which": list(WHAT)},
                         inline=profile.tiny)
    log(f"row 6: all three: RSS {gib(together['rss_loaded'])} (tensors {gib(together['tensor_bytes'])}, "
        f"shared {together['shared']})")
    sum_rss = sum(a["rss_loaded"] for a in apart.values())
    ratio = together["rss_loaded"] / sum_rss
    sum_weights = sum(a["rss_loaded"] - a["rss_base"] for a in apart.values())
    weights_ratio = (together["rss_loaded"] - together["rss_base"]) / sum_weights
    row = Row(6, "Shared components save memory (inpaint + depth + x4)",
              f"one engine {gib(together['rss_loaded'])} vs three alone {gib(sum_rss)} = **{ratio:.3f}×** "
              f"(weights alone: {weights_ratio:.3f}×)", "≤ 0.75×", ratio <= 0.75,
              {"apart": apart, "together": together, "ratio": ratio, "weights_ratio": weights_ratio})
    row.notes.append("RSS of whole processes (Python, torch, diffusers and the weights), each measured in a fresh "
                     "process; 'weights alone' subtracts each process's RSS before loading "
                     f"({gib(together['rss_base'])} here)")
    row.notes.append(f"shared in the one engine: {', '.join(f'{k}: {v}' for k, v in together['shared'].items() if v)}")
    runs = list(apart.values()) + [together]
    overhead = [r["rss_loaded"] - r["rss_base"] - r["tensor_bytes"] for r in runs]
    memory = {"rss_minus_tensors": overhead, "worst_extra": max(overhead),
              "peak_during_load_over_final": max(r["peak_rss"] - r["rss_loaded"] for r in runs),
              "runs": [{"which": r["which"], "tensors": r["tensor_bytes"],
                        "added": r["rss_loaded"] - r["rss_base"], "peak": r["peak_rss"]} for r in runs]}
    return row, memory
