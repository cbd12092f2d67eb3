"""Every job kind keeps the shared pipeline contract (``tests/pipeline_contract.py``)."""

from __future__ import annotations

import numpy as np
import pytest

from core.contract import modes
from core.contract.jobs import JobRequest, Options
from core.pipelines import PIPELINES

from .helpers import buffer, rect_mask, rgba_u8
from .pipeline_contract import PipelineContract, params

H, W = 72, 88
IMG = rgba_u8(H, W, seed=9)
MASK = rect_mask(H, W, 30, 20, 60, 50)


def image_request(mode: str, options: Options | None = None, **kw) -> JobRequest:
    return JobRequest(mode, params(**kw), options or modes_default(mode), image=buffer(IMG),
                      mask=buffer(MASK, "GRAY_U8"))


def modes_default(mode: str) -> Options:
    from core.contract.jobs import default_options

    return default_options(mode)


def test_every_mode_has_a_pipeline_and_a_contract_class():
    assert set(PIPELINES) == set(modes.MODES)
    tested = {c.mode for c in globals().values() if isinstance(c, type) and issubclass(c, PipelineContract)
              and c is not PipelineContract}
    assert tested == set(modes.MODES)


class TestInpaint(PipelineContract):
    mode = "inpaint"

    def request(self, **kw):
        return image_request("inpaint", **{"strength": 1.0, **kw})


class TestRestyle(PipelineContract):
    mode = "restyle"

    def request(self, **kw):
        return image_request("restyle", **{"strength": 0.7, **kw})


class TestGenerateImageToImage(PipelineContract):
    mode = "generate"

    def request(self, **kw):
        return image_request("generate", **{"strength": 0.7, **kw})


class TestGenerateTextToImage(PipelineContract):
    mode = "generate"

    def request(self, **kw):
        """Text-to-image into a selection of a 72×88 canvas (no image: the selection limits it)."""
        return JobRequest("generate", params(**kw), Options(), mask=buffer(MASK, "GRAY_U8"), canvas=(W, H))

    @staticmethod
    def outside_selection(req, patch):
        from core.raster.pixels import as_array, mask_array

        sel = mask_array(req.mask)
        alpha = as_array(patch.image)[..., 3]
        return alpha[sel[patch.y:patch.y + patch.image.height, patch.x:patch.x + patch.image.width] == 0]


class TestDepth(PipelineContract):
    mode = "depth"
    seeded = False
    cancel_phase = "encoding"

    def request(self, **kw):
        return image_request("depth", **kw)


class TestUpscale(PipelineContract):
    mode = "upscale"
    batch = False

    def request(self, **kw):
        small = IMG[:36, :44].copy()
        mask = np.zeros((36, 44, 1), np.uint8)
        mask[10:26, 12:30] = 255
        return JobRequest("upscale", params(**{"steps": 2, **kw}), Options(tile=64), image=buffer(small),
                          mask=buffer(mask, "GRAY_U8"))


class TestFill(PipelineContract):
    mode = "fill"
    seeded = False

    def request(self, **kw):
        return image_request("fill", Options(grow=4, feather=0, backend="opencv"), **kw)


class TestExpand(PipelineContract):
    """Expand has no selection: what it must leave as it is are the old pixels, at their place on the
    grown canvas (the patch is in the grown canvas's coordinates)."""

    mode = "expand"

    def request(self, **kw):
        return JobRequest("expand", params(**{"steps": 2, "strength": 0.7, **kw}),
                          Options(expand_left=0, expand_top=0, expand_right=24, expand_bottom=6), image=buffer(IMG))

    def untouched(self, req, patch):
        from core.raster.pixels import as_array

        alpha = np.zeros((H + 6, W + 24), as_array(patch.image).dtype)
        alpha[patch.y:patch.y + patch.image.height, patch.x:patch.x + patch.image.width] = \
            as_array(patch.image)[..., 3]
        return alpha[:H, :W]


class TestPreprocess(PipelineContract):
    mode = "preprocess"
    seeded = False
    cancel_phase = "encoding"

    def request(self, **kw):
        return image_request("preprocess", Options(control_type="softedge"), **kw)


class TestInpaintWithControls(PipelineContract):
    """Inpaint through the ControlNet pipeline (two tiny ControlNets at once) keeps the same contract."""

    mode = "inpaint"

    @pytest.fixture(autouse=True)
    def _controlnets(self, tiny_root):
        from core.devtools.tiny_models import build_controlnet

        for kind in ("canny", "scribble"):
            build_controlnet(tiny_root / f"controlnet-{kind}")

    def request(self, **kw):
        from dataclasses import replace

        from core.contract.controls import Control

        req = image_request("inpaint", **{"strength": 0.9, **kw})
        return replace(req, controls=(Control("canny", buffer(IMG), 1.0, 0.0, 0.6),
                                      Control("scribble", buffer(IMG), 0.5, 0.3, 1.0)))


class TestRestyleWithControls(PipelineContract):
    """Restyle through the ControlNet image-to-image pipeline over the depth model keeps the same contract."""

    mode = "restyle"

    @pytest.fixture(autouse=True)
    def _controlnets(self, tiny_root):
        from core.devtools.tiny_models import build_controlnet

        build_controlnet(tiny_root / "controlnet-depth")

    def request(self, **kw):
        from dataclasses import replace

        from core.contract.controls import Control

        req = image_request("restyle", **{"strength": 0.7, **kw})
        return replace(req, controls=(Control("depth", buffer(IMG), 1.0, 0.2, 0.8),))


class TestExpandWithControls(TestExpand):
    """Expand with a control of the old canvas (black over the new border) keeps the same contract."""

    @pytest.fixture(autouse=True)
    def _controlnets(self, tiny_root):
        from core.devtools.tiny_models import build_controlnet

        build_controlnet(tiny_root / "controlnet-canny")

    def request(self, **kw):
        from dataclasses import replace

        from core.contract.controls import Control

        return replace(super().request(**kw), controls=(Control("canny", buffer(IMG), 0.8, 0.0, 1.0),))


class TestRestyleWithReference(TestRestyleWithControls):
    """Restyle with a reference image and a ControlNet (the reference pass on the depth UNet behind
    ``DepthUNet``, with the job's depth channel) keeps the same contract."""

    def request(self, **kw):
        from dataclasses import replace

        from core.contract.controls import Control

        req = super().request(**kw)
        return replace(req, controls=(*req.controls, Control("reference", buffer(rgba_u8(H, W, seed=3)), 1.0, 0.0, 0.7)))


class TestExpandWithReference(TestExpand):
    """Expand with a reference image of the old canvas (each pass its nearest part) keeps the same contract."""

    def request(self, **kw):
        from dataclasses import replace

        from core.contract.controls import Control

        return replace(super().request(**kw), controls=(Control("reference", buffer(rgba_u8(H, W, seed=3)), 1.2),))


class TestLive(PipelineContract):
    """SD-Turbo at 1–4 steps without guidance (the contract's requests ask for 3 steps)."""

    mode = "live"
    batch = False

    def request(self, **kw):
        return image_request("live", **{"strength": 0.5, **kw})
