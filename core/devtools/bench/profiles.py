"""What each benchmark mode measures: the full run, ``--quick`` and ``--quick --smoke``."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    tiny: bool                     # tiny test models instead of full-size SD2 architectures
    size: int                      # side (px) the SD2 512 models work at (the tiny ones at 128)
    step_repeats: int              # row 1: timed UNet steps per variant (best of)
    e2e_steps: int                 # row 2: denoising steps of the 512 inpaint, ours and stock
    canvases: tuple[int, ...]      # row 3: canvas sides
    selection: int                 # row 3: side of the square selection
    canvas_steps: int              # row 3: steps per job
    canvas_rounds: int             # row 3: rounds (best of; after the first, the smallest and largest canvas)
    x4_tile: int                   # row 4: tile side (input px)
    x4_sizes: tuple[int, ...]      # row 4: input sides
    x4_steps: int                  # row 4: steps per tile
    tile_candidates: tuple[int, ...]  # x4 tile sizes compared (optimisation table)
    tile_input: int                # input side used to compare tile sizes
    layer: int                     # row 5: layer side
    layer_repeats: int             # row 5: round trips per format (best of)
    stall_layer: int               # row 5: layer side of the job watched for event-loop stalls
    start_repeats: int             # row 7: engine starts (median)
    compiled_step: bool = True     # row 1: also time the compiled UNet (minutes of compiling; --compile)
    fp32_repeats: int = 3          # row 1: timed fp32 steps (best of)
    channels_last_step: bool = True  # row 1: also time channels_last activations (not adopted)
    expand_size: tuple[int, int] = (1024, 768)   # row 9: the image grown
    expand_px: int = 256           # row 9: px added on one side
    expand_steps: int = 10         # row 9: steps of both jobs
    expand_rounds: int = 3         # row 9: rounds (best of; both jobs each round, in alternating order)
    live_sizes: tuple[int, ...] = (512, 384)   # row 10: Live frame sides (working size = layer size)
    live_repeats: int = 3          # row 10: timed frames per size and autoencoder (best of, after a warm one)

    def as_dict(self) -> dict:
        return asdict(self)


FULL = Profile("full", tiny=False, size=512, step_repeats=3, e2e_steps=20, canvases=(512, 2048, 8192), selection=256,
               canvas_steps=10, canvas_rounds=3, x4_tile=128, x4_sizes=(128, 256, 512, 1024), x4_steps=2,
               tile_candidates=(64, 96, 128, 160, 192), tile_input=256, layer=4096, layer_repeats=5,
               stall_layer=4096, start_repeats=5)
QUICK = Profile("quick", tiny=False, size=512, step_repeats=2, e2e_steps=3, canvases=(512, 2048, 8192), selection=256,
                canvas_steps=1, canvas_rounds=3, x4_tile=64, x4_sizes=(64, 256), x4_steps=1,
                tile_candidates=(64, 96, 128), tile_input=128, layer=4096, layer_repeats=3, stall_layer=4096,
                start_repeats=3, channels_last_step=False, compiled_step=False, fp32_repeats=1, expand_steps=2,
                expand_rounds=2, live_repeats=2)
SMOKE = Profile("smoke", tiny=True, size=128, step_repeats=1, e2e_steps=2, canvases=(128, 512, 1024), selection=64,
                canvas_steps=1, canvas_rounds=2, x4_tile=64, x4_sizes=(16, 64), x4_steps=1, tile_candidates=(64,),
                tile_input=16, layer=256, layer_repeats=1, stall_layer=256, start_repeats=1, compiled_step=False, fp32_repeats=1,
                expand_size=(256, 192), expand_px=64, expand_steps=1, expand_rounds=2, live_sizes=(128, 96), live_repeats=1)


def profile(quick: bool, smoke: bool) -> Profile:
    if smoke and not quick:
        raise ValueError("--smoke goes with --quick (it is the quick run on the tiny models)")
    return SMOKE if smoke else QUICK if quick else FULL
