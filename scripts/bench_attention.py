"""Attention alone: torch's ``scaled_dot_product_attention`` against the blocked kernel
(core/models/blocked_attention.py), on the attention shapes of SD2's UNet and VAE.

    .venv/bin/python scripts/bench_attention.py [--sizes 512 768] [--dtype bfloat16|float32] [--rounds 5]

Each shape is a guided batch of 2 (the VAE's: 1): the UNet's self-attention at its three attention levels
(image tokens over image tokens, heads of 64 channels) and its cross-attention at the first level (over the
prompt's 77 tokens), and the VAE's mid-block attention (one head of 512 channels).  The two kernels are
timed in alternation, ``--rounds`` times each; the table gives the best and median of each and the ratio
of the medians.  Nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LEVELS = ((320, 1), (640, 2), (1280, 4))    # SD2 UNet channels and downsampling of its attention levels


def shapes(size: int) -> list[tuple[str, tuple[int, int, int, int, int, int]]]:
    """(label, (batch, heads, tokens, keys, head size, value size)) for an image of ``size``²."""
    side = size // 8
    out = []
    for channels, down in LEVELS:
        tokens = (side // down) ** 2
        out.append((f"UNet self {side // down}² ×{channels // 64} heads", (2, channels // 64, tokens, tokens, 64, 64)))
    first = side * side
    out.append((f"UNet cross {side}² × 77", (2, 5, first, 77, 64, 64)))
    out.append((f"VAE mid {side}², 1 head of 512", (1, 1, first, first, 512, 512)))
    return out


def main(argv=None) -> int:
    import torch
    import torch.nn.functional as F

    from core.models.blocked_attention import blocked_attention

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 768])
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.dtype}, {args.rounds} rounds\n")
    print("| size | attention | GFLOP | torch best / median | blocked best / median | torch ÷ blocked (medians) |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        for label, (b, h, rows, keys, d, dv) in shapes(size):
            g = torch.Generator().manual_seed(0)
            q = torch.randn(b, h, rows, d, generator=g).to(dtype)
            k = torch.randn(b, h, keys, d, generator=g).to(dtype)
            v = torch.randn(b, h, keys, dv, generator=g).to(dtype)
            kernels = {"torch": F.scaled_dot_product_attention, "blocked": blocked_attention}
            times: dict[str, list[float]] = {name: [] for name in kernels}
            with torch.inference_mode():
                for fn in kernels.values():
                    fn(q, k, v)
                for _ in range(args.rounds):
                    for name, fn in kernels.items():
                        t = time.perf_counter()
                        fn(q, k, v)
                        times[name].append(time.perf_counter() - t)
            gflop = 2 * b * h * rows * keys * (d + dv) / 1e9
            med = {n: statistics.median(ts) for n, ts in times.items()}
            cells = [f"{min(ts) * 1e3:.1f} / {med[n] * 1e3:.1f} ms" for n, ts in times.items()]
            print(f"| {size}² | {label} | {gflop:.1f} | {cells[0]} | {cells[1]} | **{med['torch'] / med['blocked']:.2f}×** |",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
