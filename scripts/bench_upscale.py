"""Benchmark: peak memory and time of the tiled x4 upscale as the input grows.

    .venv/bin/python scripts/bench_upscale.py                      # tiny models, sizes 64…512
    .venv/bin/python scripts/bench_upscale.py --sizes 128 256 --steps 1 --full   # full-size random weights

Each run is a fresh process; the peak is measured from after loading (Linux: VmHWM, reset through
/proc/self/clear_refs), so it is the job's own.  Prints a table; the point is that peak memory follows
the tile size (plus the output image itself), not the input area.  A benchmark,
never a test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, sys, time
import numpy as np
from pathlib import Path
from core.models import env; env.apply()
from core.contract.jobs import ImageBuffer, JobRequest, Options, Params
from core.models.manager import ModelManager
from core.models.device import current_policy
from core.pipelines import run_job
size, tile, steps, folder = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
mm = ModelManager(current_policy(), models_dir=Path(folder), hub_cache=Path("/nonexistent"))
mm.get("upscale")

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024

import gc; gc.collect()
base = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:  # restart the peak (VmHWM) from here: the job's own peak
    f.write("5")
rng = np.random.default_rng(0)
img = rng.integers(0, 256, (size, size, 4), dtype=np.uint8); img[..., 3] = 255
req = JobRequest("upscale", Params(prompt="detailed", steps=steps, seed=1, guidance=7.5), Options(tile=tile),
                 image=ImageBuffer(size, size, "RGBA_U8", img.tobytes()))
t = time.perf_counter()
res = run_job(req, mm)
print(json.dumps({"seconds": time.perf_counter() - t, "tiles": res.timings["tiles"],
                  "loaded_mb": base, "peak_mb": status("VmHWM")}))
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512], help="input sides (px)")
    ap.add_argument("--tile", type=int, default=128, help="tile side in input px (default 128)")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--full", action="store_true", help="full-size random-weight x4 upscaler (slow, ~2 GB)")
    ap.add_argument("--models", type=Path, default=None, help="folder with sd2-x4-upscaler/ (default: build)")
    args = ap.parse_args(argv)
    from core.contract import paths
    from core.devtools.tiny_models import build

    folder = args.models or paths.cache_dir() / ("bench-full" if args.full else "bench-tiny")
    if args.models is None:
        build("x4", folder / "sd2-x4-upscaler", full=args.full)
    print(f"{'input':>9} {'output':>11} {'tiles':>5} {'seconds':>8} {'RSS after load MB':>18} {'peak in job MB':>15} {'job extra MB':>13}")
    for size in args.sizes:
        r = subprocess.run([sys.executable, "-c", CHILD, str(size), str(args.tile), str(args.steps), str(folder)],
                           capture_output=True, text=True, cwd=ROOT)
        if r.returncode != 0:
            print(f"{size:>9}  failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
            continue
        m = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"{f'{size}²':>9} {f'{4 * size}²':>11} {m['tiles']:>5} {m['seconds']:>8.1f} {m['loaded_mb']:>18.0f} "
              f"{m['peak_mb']:>15.0f} {m['peak_mb'] - m['loaded_mb']:>13.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
