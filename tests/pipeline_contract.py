"""The contract every job kind keeps, as a mixin each pipeline's test class inherits (in the style of
diffusers' ``PipelineTesterMixin``).  A class sets ``mode`` and ``request(**params)``; the mixin checks,
on the tiny models through the real pipeline:

- pixels outside the selection are unchanged (the patch's alpha is 0 there, so stacking it as a layer
  leaves them bit-identical); a mode without a selection names what it must leave (``untouched``);
- image i uses seed + i (the second image of a batch of two equals the first of a batch of one made
  with seed + 1), and the seed is reported;
- progress is reported, in order, up to the total;
- cancel is honoured: a job cancelled at its first step ends with Cancelled, not a result;
- bad parameters are refused before any work: no model is loaded.

``tests/test_pipeline_contract.py`` holds the classes; a new mode adds one class there.
"""

from __future__ import annotations

import numpy as np
import pytest

from core.contract import modes
from core.contract.jobcontrol import Cancelled, JobControl
from core.contract.jobs import JobRequest, Params
from core.contract.params import ValidationError
from core.pipelines import pipeline, run_job
from core.raster.pixels import as_array, mask_array


class RecordingModels:
    """A model manager wrapper that records what the job asked for (true boundary: loading)."""

    def __init__(self, inner):
        self.inner = inner
        self.asked: list[str] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def get(self, mode, *a, **kw):
        self.asked.append(f"get:{mode}")
        return self.inner.get(mode, *a, **kw)

    def get_part(self, mode, *a, **kw):
        self.asked.append(f"get_part:{mode}")
        return self.inner.get_part(mode, *a, **kw)

    def get_other(self, key, *a, **kw):
        self.asked.append(f"get_other:{key[0]}")
        return self.inner.get_other(key, *a, **kw)


class PipelineContract:
    mode: str = ""
    seeded = True            # the job reports a seed and image i uses seed + i
    batch = True             # the job makes num_images images
    cancel_phase = "denoising"   # the phase in which the test cancels (the job must stop in it)

    def request(self, **params) -> JobRequest:
        raise NotImplementedError

    # --- helpers -------------------------------------------------------------------------------------

    @property
    def spec(self) -> modes.ModeSpec:
        return modes.spec(self.mode)

    @staticmethod
    def outside_selection(req: JobRequest, patch) -> np.ndarray:
        """Alpha of ``patch`` over the canvas pixels the selection does not touch (scaled to the
        patch's coordinates for modes whose result is larger than the input)."""
        scale = modes.spec(req.mode).scale
        sel = mask_array(req.mask)
        if scale > 1:
            sel = np.repeat(np.repeat(sel, scale, axis=0), scale, axis=1)
        ox, oy = req.origin[0] * scale, req.origin[1] * scale
        alpha = as_array(patch.image)[..., 3]
        rows = slice(patch.y - oy, patch.y - oy + patch.image.height)
        cols = slice(patch.x - ox, patch.x - ox + patch.image.width)
        return alpha[sel[rows, cols] == 0]

    # --- the contract ----------------------------------------------------------------------------------

    def test_registered_with_a_mode_spec(self):
        assert self.mode in modes.MODE_SPECS
        assert pipeline(self.mode).mode == self.mode

    def untouched(self, req: JobRequest, patch) -> np.ndarray:
        """Alpha of ``patch`` over the pixels the job must leave as they are: outside the selection (a
        mode that works without one, Expand, names its own)."""
        assert req.mask is not None and (mask_array(req.mask) == 0).any()
        return self.outside_selection(req, patch)

    def test_outside_the_selection_is_unchanged(self, exact_models):
        req = self.request(seed=11)
        res = run_job(req, exact_models)
        assert res.patches and res.mode == self.mode
        for patch in res.patches:
            outside = self.untouched(req, patch)
            assert outside.size and not outside.any()
            assert as_array(patch.image)[..., 3].any()        # and something was painted inside

    def test_image_i_uses_seed_plus_i(self, exact_models):
        if not self.seeded:
            res = run_job(self.request(seed=5), exact_models)
            assert all(p.seed is None for p in res.patches) and res.params.seed == 5
            return
        if not (self.batch and "num_images" in self.spec.params):
            res = run_job(self.request(seed=5, num_images=3), exact_models)
            assert [p.seed for p in res.patches] == [5] and res.params.seed == 5
            return
        pair = run_job(self.request(seed=40, num_images=2), exact_models)
        assert [p.seed for p in pair.patches] == [40, 41] and pair.params.seed == 40
        alone = run_job(self.request(seed=41), exact_models)
        a, b = as_array(alone.patches[0].image).astype(int), as_array(pair.patches[1].image).astype(int)
        assert np.abs(a - b).max() <= 1
        assert not np.array_equal(as_array(pair.patches[0].image), as_array(pair.patches[1].image))

    def test_a_random_seed_is_chosen_and_reported(self, exact_models):
        if not self.seeded:
            return
        res = run_job(self.request(seed=None), exact_models)
        assert isinstance(res.params.seed, int) and res.patches[0].seed == res.params.seed

    def test_progress_is_reported_in_order(self, exact_models):
        seen = []
        run_job(self.request(seed=3), exact_models, JobControl(lambda s, t, ph: seen.append((s, t, ph))))
        steps = [(s, t) for s, t, ph in seen if t > 0]
        assert steps and any(ph == self.cancel_phase for _, _, ph in seen), seen
        assert [s for s, _ in steps] == sorted(s for s, _ in steps)
        assert steps[-1][0] == steps[-1][1] > 0
        assert seen[-1][2] in ("finishing", "decoding", "denoising")

    def test_cancel_is_honoured(self, exact_models):
        phases = []

        def on_progress(step, total, phase):
            phases.append(phase)
            if phase == self.cancel_phase:
                control.cancel()

        control = JobControl(on_progress)
        with pytest.raises(Cancelled):
            run_job(self.request(seed=3), exact_models, control)
        assert phases[-1] == self.cancel_phase    # nothing was reported after the cancel

    @pytest.mark.parametrize("bad", [{"steps": 0}, {"steps": 513}, {"guidance": 0.5}, {"seed": -1},
                                     {"strength": 1.5}, {"prompt": 7}])
    def test_bad_parameters_are_refused_before_any_work(self, exact_models, bad):
        recording = RecordingModels(exact_models)
        with pytest.raises(ValidationError) as e:
            run_job(self.request(**bad), recording)
        assert e.value.parameter == next(iter(bad))
        assert recording.asked == []


def params(**kw) -> Params:
    p = {"prompt": "a red ball", "steps": 3, "seed": 1}
    p.update(kw)
    return Params(**p)
