"""Validation of the restyle, depth, upscale and generate requests: refused before any model loads."""

import pytest

from core.contract.jobs import JobRequest, Options, Params, validate
from core.contract.params import ValidationError
from core.pipelines import run_job

from .helpers import buffer, rect_mask, rgba_u8

IMG = buffer(rgba_u8(24, 32))


@pytest.mark.parametrize("mode,params,options,image,name", [
    ("upscale", {}, {"noise_level": 351}, IMG, "noise_level"),
    ("upscale", {}, {"noise_level": -1}, IMG, "noise_level"),
    ("upscale", {}, {"noise_level": 2.5}, IMG, "noise_level"),
    ("upscale", {}, {"tile": 513}, IMG, "tile"),
    ("upscale", {}, {}, buffer(rgba_u8(1, 4097)), "image"),            # the result would pass 16384 px
    ("generate", {}, {"width": 512, "height": 36}, None, "height"),
    ("generate", {}, {"width": 8200, "height": 512}, None, "width"),
    ("generate", {}, {"width": 516, "height": 512}, None, "width"),
    ("generate", {}, {"width": 512}, None, "width"),
    ("generate", {"strength": 1.2}, {}, IMG, "strength"),
    ("restyle", {"strength": -0.5}, {}, IMG, "strength"),
    ("restyle", {}, {"depth_source": "given"}, IMG, "depth"),            # given, but no depth image
    ("depth", {}, {}, None, "image"),
])
def test_out_of_range_is_refused_before_loading(models, mode, params, options, image, name):
    req = JobRequest(mode, Params(**params), Options(**options), image=image)
    loads = models.loads
    with pytest.raises(ValidationError) as e:
        run_job(req, models)
    assert e.value.parameter == name
    assert models.loads == loads


def test_upscale_accepts_the_largest_input_whose_result_fits():
    validate(JobRequest("upscale", image=buffer(rgba_u8(1, 4096))))


def test_text_to_image_selection_must_lie_inside_the_canvas():
    mask = buffer(rect_mask(64, 64, 0, 0, 8, 8), "GRAY_U8")
    validate(JobRequest("generate", options=Options(width=64, height=64), mask=mask))
    with pytest.raises(ValidationError) as e:
        validate(JobRequest("generate", options=Options(width=64, height=64), mask=mask, origin=(8, 0)))
    assert e.value.parameter == "mask"
