"""Row 1: one guided UNet step against the hardware's floor (its FLOPs at the measured matmul rate),
and the policy decisions measured on the same step: bf16 against fp32, guidance 1 against guided."""

from __future__ import annotations

from .common import Row, best_of, fmt_s, now
from .profiles import Profile

MATMUL_SIDE = 2048


def matmul_rate(dtype, side: int = MATMUL_SIDE, seconds: float = 1.0) -> float:
    """FLOP/s of a side×side matmul in ``dtype`` on this CPU (best of repeated runs within ``seconds``)."""
    import torch

    a = torch.randn(side, side, dtype=dtype)
    b = torch.randn(side, side, dtype=dtype)
    with torch.inference_mode():
        a @ b
        best, t0 = float("inf"), now()
        while now() - t0 < seconds or best == float("inf"):
            t = now()
            a @ b
            best = min(best, now() - t)
    return 2 * side**3 / best


def rate_stats(rates: list[float]) -> dict:
    """Best, median and spread of repeated matmul rates (GFLOP/s)."""
    import statistics

    g = [r / 1e9 for r in rates]
    return {"n": len(g), "max": max(g), "median": statistics.median(g), "min": min(g),
            "spread": max(g) / min(g) if min(g) > 0 else float("inf"), "all": g}


def step_inputs(unet, batch: int, size: int, dtype):
    import torch

    g = torch.Generator().manual_seed(0)
    h = w = size // 8
    cfg = unet.config
    x = torch.randn(batch, cfg.in_channels, h, w, generator=g).to(dtype)
    ctx = torch.randn(batch, 77, cfg.cross_attention_dim, generator=g).to(dtype)
    return x, torch.full((batch,), 500, dtype=torch.long), ctx


def count_flops(config: dict, batch: int, size: int) -> int:
    """FLOPs of one UNet forward (torch's flop counter, on the meta device: nothing is computed)."""
    import torch
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
        x, t, ctx = step_inputs_meta(unet, batch, size)
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            unet(x, t, encoder_hidden_states=ctx)
    return int(counter.get_total_flops())


def step_inputs_meta(unet, batch: int, size: int):
    import torch

    cfg = unet.config
    h = w = size // 8
    return (torch.empty(batch, cfg.in_channels, h, w), torch.full((batch,), 500, dtype=torch.long),
            torch.empty(batch, 77, cfg.cross_attention_dim))


def time_step(unet, batch: int, size: int, repeats: int, channels_last: bool = False) -> tuple[float, list[float]]:
    import torch

    x, t, ctx = step_inputs(unet, batch, size, unet.dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        return best_of(lambda: unet(x, t, encoder_hidden_states=ctx), repeats, warm=1)


def time_compiled(unet, batch: int, size: int, repeats: int) -> dict:
    """The step through the engine's compiled UNet (core/models/unet_compile.py), called as the pipelines call
    it (no_grad): the first call runs eagerly and starts the background compilation, which is waited
    for and timed; then the compiled steps, best of ``repeats``."""
    import torch

    from ...models.unet_compile import install, uninstall

    dispatcher = install(unet)
    x, t, ctx = step_inputs(unet, batch, size, unet.dtype)
    step = lambda: unet(x, t, encoder_hidden_states=ctx, return_dict=False)  # noqa: E731
    try:
        with torch.no_grad():
            t0 = now()
            step()
            dispatcher.wait()
            compile_s = now() - t0
            if not dispatcher.ready:
                raise RuntimeError(f"the UNet did not compile: {list(dispatcher.failed.values())[:1]}")
            best, all_s = best_of(step, repeats, warm=1)
        if dispatcher.calls["compiled"] != repeats + 1:
            raise RuntimeError(f"compiled steps expected, the dispatcher counted {dispatcher.calls}")
    finally:
        uninstall(unet)
    return {"compile_s": compile_s, "step_s": best, "step_all_s": all_s}


OP_KINDS = (   # torch op name fragments → the kind of work, first match wins
    ("convolution", ("convolution",)),
    ("attention", ("scaled_dot_product", "flash_attention", "blocked_attention")),
    ("linear and matmul", ("addmm", "aten::mm", "bmm", "baddbmm", "matmul", "linear")),
    ("normalisation", ("group_norm", "layer_norm")),
    ("copies and layout", ("copy_", "clone", "contiguous", "cat", "to_dense", "reorder")),
)


def kind_of(name: str) -> str:
    return next((k for k, parts in OP_KINDS if any(p in name for p in parts)), "elementwise and other")


def seconds_by_kind(prof) -> dict[str, float]:
    """A torch profile's CPU self time in seconds by kind of work (``OP_KINDS``), largest first.  An op
    run inside an attention op (the blocked kernel's matmuls and softmax) counts as attention."""
    spent: dict[str, float] = {}
    for ev in prof.events():
        kind, parent = kind_of(ev.name), ev.cpu_parent
        while parent is not None and kind != "attention":
            kind = "attention" if kind_of(parent.name) == "attention" else kind
            parent = parent.cpu_parent
        spent[kind] = spent.get(kind, 0.0) + ev.self_cpu_time_total / 1e6
    return dict(sorted(spent.items(), key=lambda kv: -kv[1]))


def op_breakdown(unet, batch: int, size: int) -> dict[str, float]:
    """Share of one step's CPU time by kind of work (torch's profiler, self time of each op)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    x, t, ctx = step_inputs(unet, batch, size, unet.dtype)
    with torch.inference_mode():
        unet(x, t, encoder_hidden_states=ctx)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            unet(x, t, encoder_hidden_states=ctx)
    spent = seconds_by_kind(prof)
    total = sum(spent.values()) or 1.0
    return {k: v / total for k, v in spent.items()}


def fp32_unet(resolved):
    """The same UNet weights in float32, loaded from the model's files (what an fp32 policy runs)."""
    import torch
    from diffusers import UNet2DConditionModel

    kw = {"variant": resolved.variant} if resolved.variant else {}
    return UNet2DConditionModel.from_pretrained(str(resolved.path / "unet"), dtype=torch.float32,
                                                local_files_only=True, use_safetensors=True, **kw).eval()


def run(profile: Profile, models, log) -> tuple[Row, dict]:
    import torch

    loaded = models.get("inpaint")
    unet = loaded.pipe.unet
    size = profile.size
    flops_guided = count_flops(dict(unet.config), 2, size)
    flops_single = count_flops(dict(unet.config), 1, size)
    log(f"row 1: {flops_guided / 1e9:.0f} GFLOP per guided step at {size}²; measuring matmul rates")
    seconds = 0.2 if profile.tiny else 1.0
    # The floor's matmul rate is measured several times, between the timed steps: on a shared VM it
    # can change by 2-3× within minutes.  The verdict uses the best rate (the harshest floor); the
    # median and the spread show the machine's noise.
    rates: dict = {torch.bfloat16: [], torch.float32: []}

    def sample_rates(dtypes=(torch.bfloat16, torch.float32)) -> None:
        for dt in dtypes:
            rates[dt].append(matmul_rate(dt, seconds=seconds))

    sample_rates()
    rate_bf16, rate_fp32 = rates[torch.bfloat16][0], rates[torch.float32][0]
    log(f"row 1: matmul {rate_bf16 / 1e9:.0f} GFLOP/s bf16, {rate_fp32 / 1e9:.0f} GFLOP/s fp32; timing steps")
    policy_dtype = str(unet.dtype).replace("torch.", "")
    guided, guided_all = time_step(unet, 2, size, profile.step_repeats)
    sample_rates()
    log(f"row 1: guided step ({policy_dtype}) {fmt_s(guided)}")
    shares = op_breakdown(unet, 2, size)
    log("row 1: where the step's time goes: " + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()))
    single, single_all = time_step(unet, 1, size, profile.step_repeats)
    log(f"row 1: unguided step (guidance 1, batch 1) {fmt_s(single)}")
    sample_rates()
    cl = cl_all = None
    if profile.channels_last_step:
        unet.to(memory_format=torch.channels_last)
        try:
            cl, cl_all = time_step(unet, 2, size, profile.step_repeats, channels_last=True)
        finally:
            unet.to(memory_format=torch.contiguous_format)
        log(f"row 1: guided step ({policy_dtype}, channels_last) {fmt_s(cl)}")
    full = fp32_unet(loaded.resolved)
    try:
        guided32, guided32_all = time_step(full, 2, size, profile.fp32_repeats)
    finally:
        del full
    log(f"row 1: guided step fp32 {fmt_s(guided32)}")
    sample_rates()
    compiled = None
    if profile.compiled_step:
        log("row 1: compiling the UNet as the engine does with --compile (minutes)")
        compiled = time_compiled(unet, 2, size, profile.step_repeats)
        log(f"row 1: compiled in {fmt_s(compiled['compile_s'])}; guided step ({policy_dtype}, compiled) "
            f"{fmt_s(compiled['step_s'])}")
    sample_rates()
    rate_bf16_end = rates[torch.bfloat16][-1]
    log(f"row 1: matmul {rate_bf16_end / 1e9:.0f} GFLOP/s bf16 after the steps")
    spread = {str(dt).replace("torch.", ""): rate_stats(r) for dt, r in rates.items()}
    rate_bf16, rate_fp32 = max(rates[torch.bfloat16]), max(rates[torch.float32])
    rate = rate_bf16 if unet.dtype == torch.bfloat16 else rate_fp32
    stats = spread[policy_dtype if policy_dtype in spread else "float32"]
    floor = flops_guided / rate
    floor32 = flops_guided / rate_fp32
    ratio = guided / floor
    best = compiled["step_s"] if compiled else guided
    best_ratio = best / floor
    figures = {
        "size": size, "batch": 2, "dtype": policy_dtype, "gflop_guided_step": flops_guided / 1e9,
        "gflop_unguided_step": flops_single / 1e9, "matmul_side": MATMUL_SIDE,
        "matmul_gflops_bf16": rate_bf16 / 1e9, "matmul_gflops_fp32": rate_fp32 / 1e9,
        "matmul_gflops_bf16_after": rate_bf16_end / 1e9, "matmul_rates": spread,
        "step_s": guided, "step_all_s": guided_all, "floor_s": floor, "ratio_to_floor": ratio,
        "step_fp32_s": guided32, "step_fp32_all_s": guided32_all, "floor_fp32_s": floor32,
        "ratio_to_floor_fp32": guided32 / floor32, "step_guidance1_s": single, "step_guidance1_all_s": single_all,
        "step_channels_last_s": cl, "step_channels_last_all_s": cl_all,
        "achieved_gflops": flops_guided / guided / 1e9, "achieved_gflops_fp32": flops_guided / guided32 / 1e9,
        "time_shares": shares, "compiled": compiled,
        "ratio_to_floor_compiled": compiled["step_s"] / floor if compiled else None,
    }
    eager_text = (f"{fmt_s(guided)} {policy_dtype} vs floor {fmt_s(floor)} = **{ratio:.2f}×** "
                  f"(fp32: {fmt_s(guided32)} vs {fmt_s(floor32)} = {guided32 / floor32:.2f}×)")
    if compiled:
        measured = (f"compiled (`--compile`): {fmt_s(best)} vs floor {fmt_s(floor)} = **{best_ratio:.2f}×**; "
                    f"eager: {eager_text}")
    else:
        measured = eager_text
    row = Row(1, f"UNet step against the floor ({size}², batch 2)", measured, "≤ 1.25× the floor",
              best_ratio <= 1.25, figures)
    row.notes.append(f"floor = {flops_guided / 1e9:.0f} GFLOP (torch flop counter) / {rate / 1e9:.0f} GFLOP/s, the best "
                     f"of {stats['n']} {MATMUL_SIDE}² {policy_dtype} matmul rates measured between the timed steps "
                     f"(median {stats['median']:.0f}, range {stats['min']:.0f}–{stats['max']:.0f} GFLOP/s: the "
                     f"machine's noise; at the median rate the ratio would be "
                     f"{best / (flops_guided / (stats['median'] * 1e9)):.2f}×); the step reached "
                     f"{flops_guided / best / 1e9:.0f} GFLOP/s")
    if compiled:
        row.notes.append(f"compiled UNet (the engine's `--compile`, core/models/unet_compile.py: inductor, weights frozen "
                         f"and prepacked): the first call ran eagerly and the compilation beside it took "
                         f"{fmt_s(compiled['compile_s'])}; then {fmt_s(best)} per step against {fmt_s(guided)} "
                         f"eager ({guided / best:.2f}×)")
    row.notes.append(f"where the {policy_dtype} step's time goes (torch profiler, self time): "
                     + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()))
    policy = {
        "bf16": {"fp32_s": guided32, "bf16_s": guided, "speedup": guided32 / guided},
        "guidance1": {"guided_s": guided, "unguided_s": single, "speedup": guided / single},
    }
    if cl is not None:
        policy["channels_last"] = {"before_s": guided, "after_s": cl}
    if compiled:
        policy["compiled"] = {"eager_s": guided, "compiled_s": best, "compile_s": compiled["compile_s"],
                              "speedup": guided / best}
    return row, policy

