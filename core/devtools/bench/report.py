"""The benchmark's outputs: the Markdown table (printed and written into docs/benchmarks.md between
its own markers) and the JSON file of raw figures."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ...contract import atomic
from .common import Row, fmt_s, gib
from .machine import describe

START, END = "<!-- core-bench:start -->", "<!-- core-bench:end -->"

WHAT_IS_MEASURED = {
    "full": "the full run: row 1 best of 3 steps; row 2 20 steps; row 3 10 steps, best of 3 rounds (512² and 8192² each round, 2048² in the first); row 4 tile 128 "
            "with 128²–1024² inputs, 2 steps per tile; tile candidates 64–192; row 5 best of 5; row 7 median of 5; "
            "row 9 256 px beside 1024×768 at 10 steps, best of 3 rounds",
    "quick": "`--quick`: row 1 best of 2 timed steps per variant (after one warm-up; fp32 one timed step; no channels_last; "
             "the compiled step only with --compile); row 2 3 steps; row 3 1 step per job, best of 3 rounds (512² and 8192² in alternating order each round, 2048² in the first); "
             "row 4 tile 64 with 64² and 256² inputs (the goal compares 256² with 64², the same 4× ratio as "
             "1024² with 256²), 1 step per tile; tile candidates 64, 96 and 128, each on an input two tiles wide at 2 steps (warm UNet call and VAE decode); row 5 best of 3; row 7 median of 3; "
             "row 9 256 px beside 1024×768 at 2 steps, best of 2 rounds",
    "smoke": "`--quick --smoke`: every row on the tiny test models at small sizes; checks that the benchmark "
             "runs, its figures mean nothing",
}


def main_table(rows: list[Row]) -> str:
    lines = ["| # | measure | result | goal | verdict |", "|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: r.number):
        lines.append(f"| {r.number} | {r.title} | {r.measured} | {r.goal} | **{r.verdict}** |")
    return "\n".join(lines)


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "–"


def policy_table(policy: dict) -> str:
    """optimisation | measured, from the figures the rows collected."""
    out = ["| optimisation | measured |", "|---|---|"]
    if "bf16" in policy:
        b = policy["bf16"]
        out.append(f"| bf16 on avx512_bf16/AMX | UNet step fp32 {fmt_s(b['fp32_s'])} → bf16 {fmt_s(b['bf16_s'])}: "
                   f"**{b['speedup']:.2f}×** |")
    if "guidance1" in policy:
        g = policy["guidance1"]
        out.append(f"| guidance 1 skips the doubled batch | step {fmt_s(g['guided_s'])} → {fmt_s(g['unguided_s'])}: "
                   f"**{g['speedup']:.2f}×** |")
    if "compiled" in policy:
        c = policy["compiled"]
        out.append(f"| compiled UNet (`--compile`; the engine compiles by default while idle) | UNet step {fmt_s(c['eager_s'])} → {fmt_s(c['compiled_s'])}: "
                   f"**{c['speedup']:.2f}×**, after {fmt_s(c['compile_s'])} of compiling in the background |")
    if "channels_last" in policy:
        c = policy["channels_last"]
        out.append(f"| channels_last activations (measured, not adopted) | UNet step {fmt_s(c['before_s'])} → "
                   f"{fmt_s(c['after_s'])}: **{c['before_s'] / c['after_s']:.2f}×** |")
    for key, name, work in (("prompt_cache", "prompt embeddings cached", "text encoding"),
                            ("vae_cache", "VAE encodes cached", "encode")):
        if key in policy:
            c = policy[key]
            out.append(f"| {name} | {work} {fmt_s(c['miss_s'])} on a miss, {fmt_s(c['hit_s'])} on a hit: "
                       f"saves {fmt_s(c['saved_s'])} ({pct(c['saved_s'], c['job_s'])} of the job) |")
    if "strength1_skip" in policy:
        s = policy["strength1_skip"]
        out.append(f"| strength 1 skips the unused start-image encode | {s['encodes_now']} encode per job instead of "
                   f"{s['encodes_now'] + 1}: saves {fmt_s(s['encode_s'])} ({pct(s['encode_s'], s['job_s'])} "
                   f"of the job) |")
    if "x4_tile" in policy:
        t = policy["x4_tile"]
        cells = ", ".join(f"{c['tile']}: {fmt_s(c['s_per_out_mpx'])}/MP (job peak {gib(c['job_rss'])})"
                          for c in t["candidates"])
        out.append(f"| x4 tile size | {t['reference_input']}² input at {t['default_steps']} steps, per output "
                   f"megapixel: {cells}; fastest **{t['best']}** |")
    if "region_only" in policy:
        r = policy["region_only"]
        out.append(f"| only the selected region reaches the model | largest canvas / smallest = **{r['ratio']:.3f}×**, "
                   f"same model inputs for every canvas: {r['same_inputs']}; whole image would take ≥ "
                   f"{fmt_s(r['whole_image_s'])} |")
    if "memory" in policy:
        m = policy["memory"]
        out.append(f"| memory: no stray copies | RSS added by loading minus the loaded tensors: at most "
                   f"{gib(m['worst_extra'])}; transient peak during loading {gib(m['peak_during_load_over_final'])} "
                   f"above the final RSS |")
    if "pixels" in policy:
        p = policy["pixels"]
        cells = "; ".join(f"{k}: {fmt_s(v['reference_s'])} → {fmt_s(v['fast_s'])} (**{v['reference_s'] / v['fast_s']:.1f}×**)"
                          for k, v in p.items())
        out.append(f"| pixel conversions in bands on every core | {cells} |")
    return "\n".join(out)


def markdown(profile, machine: dict, loads: dict, rows: list[Row], policy: dict, seconds: float) -> str:
    title = {"full": "full run", "quick": "`--quick`", "smoke": "`--quick --smoke` (tiny models)"}[profile.name]
    parts = [
        f"## Engine benchmark ({title})",
        "",
        f"Made by `python -m core.devtools.bench{' --quick' if profile.name != 'full' else ''}"
        f"{' --smoke' if profile.name == 'smoke' else ''}"
        f"{' --compile' if profile.name == 'quick' and profile.compiled_step else ''}` on {machine['when']} in {fmt_s(seconds)}. "
        "Full-size SD2 architectures with random weights (speed and memory do not depend on the weights' values), "
        "fp16 files as the installer downloads them, loaded through the engine's own loader."
        if not profile.tiny else f"Made by `python -m core.devtools.bench --quick --smoke` on {machine['when']}.",
        "",
        f"Machine: {describe(machine)}.",
        f"Load average (1, 5, 15 min) at the start {loads.get('start')}, at the end {loads.get('end')}; "
        "the machine is shared, so every goal is a ratio measured inside this one run.",
        "",
        f"What this mode measures: {WHAT_IS_MEASURED[profile.name]}.",
        "",
        main_table(rows),
        "",
    ]
    for r in sorted(rows, key=lambda r: r.number):
        for note in r.notes:
            parts.append(f"- row {r.number}: {note}")
    parts += ["", "### Speed policy, measured", "", policy_table(policy), "",
              "Raw figures: `docs/benchmarks.json`."]
    return "\n".join(parts) + "\n"


def write_section(path: Path, text: str) -> None:
    """Put ``text`` between this benchmark's markers in ``path``, leaving every other section alone."""
    path = Path(path)
    old = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    block = f"{START}\n{text.rstrip()}\n{END}"
    if START in old and END in old:
        new = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _m: block, old, count=1, flags=re.S)
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    atomic.write_text(path, new)


def write_json(path: Path, data: dict) -> None:
    atomic.write_text(path, json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")
