"""``python -m core.lama convert SRC [DST]``: convert a big-lama checkpoint to safetensors.

``python -m core.lama tiny DST``: write a tiny random-weight LaMa (tests, smoke runs).
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.lama", description="LaMa weights for the Fill job.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("convert", help="convert big-lama.pt / best.ckpt to safetensors (never runs pickled code)")
    p.add_argument("src", help="the official checkpoint: big-lama/models/best.ckpt, or IOPaint's big-lama.pt")
    p.add_argument("dst", nargs="?", help="output .safetensors (default: <models folder>/big-lama/big-lama.safetensors)")
    p = sub.add_parser("tiny", help="write a tiny random-weight LaMa (same architecture, few channels)")
    p.add_argument("dst")
    p.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from ..models.resolver import ModelError

    try:
        if args.command == "convert":
            from .convert import convert_with_summary

            s = convert_with_summary(args.src, args.dst)
            print(f"{s['parameters'] / 1e6:.1f}M parameters, {s['tensors']} tensors", file=sys.stderr)
            print(s["path"])
        else:
            from .weights import build_tiny

            print(build_tiny(args.dst, seed=args.seed))
        return 0
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
