"""Where a guided SD2 UNet step's time goes on this machine, op kind by op kind, in both memory layouts.

    .venv/bin/python scripts/bench_unet_ops.py [UNET_FOLDER] [--dtype bfloat16|float32]

UNET_FOLDER defaults to the benchmark's full-size inpaint UNet (``$DD_BENCH_MODELS`` or the cache
``python -m core.devtools.bench`` builds). Prints the step's FLOPs by op (torch's flop counter), then for the
default (NCHW) and channels_last layouts one timed step and its profile (self time by kind of work:
the same grouping as benchmark row 1). Nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    import torch
    from diffusers import UNet2DConditionModel
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    from core.devtools.bench.common import models_root
    from core.devtools.bench.profiles import QUICK
    from core.devtools.bench.unet import seconds_by_kind, step_inputs

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("unet", nargs="?", type=Path)
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    args = ap.parse_args()
    folder = args.unet or models_root(QUICK) / "sd2-inpainting" / "unet"
    dtype = getattr(torch, args.dtype)
    variant = "fp16" if any(folder.glob("*.fp16.safetensors")) else None
    unet = UNet2DConditionModel.from_pretrained(str(folder), dtype=dtype, local_files_only=True,
                                                use_safetensors=True, variant=variant).eval()
    x, t, ctx = step_inputs(unet, 2, 512, dtype)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        unet(x, t, encoder_hidden_states=ctx)
    flops = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    print(f"{folder} in {args.dtype}, 512², batch 2: GFLOP by op: "
          + ", ".join(f"{k} {v / 1e9:.0f}" for k, v in sorted(flops.items(), key=lambda kv: -kv[1])))
    for layout in ("NCHW", "channels_last"):
        xx = x
        if layout == "channels_last":
            unet.to(memory_format=torch.channels_last)
            xx = x.to(memory_format=torch.channels_last)
        with torch.inference_mode():
            unet(xx, t, encoder_hidden_states=ctx)
            start = time.perf_counter()
            unet(xx, t, encoder_hidden_states=ctx)
            step = time.perf_counter() - start
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                unet(xx, t, encoder_hidden_states=ctx)
        spent = seconds_by_kind(prof)
        total = sum(spent.values())
        print(f"\n{layout}: step {step:.2f} s (profiled {total:.2f} s)\n\n| kind of work | seconds | share |\n|---|---|---|")
        for kind, sec in spent.items():
            print(f"| {kind} | {sec:.2f} | {sec / total:.0%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
