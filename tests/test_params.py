"""Every parameter is validated; errors name the parameter and its range."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.contract.jobs import JobRequest, Options, Params, validate
from core.contract.params import RANGES, ValidationError
from core.contract.plan import TRAIN_TIMESTEPS, Schedule

from .helpers import buffer, rect_mask, rgba_u8

IMG = buffer(rgba_u8(32, 32))
MASK = buffer(rect_mask(32, 32, 4, 4, 20, 20), "GRAY_U8")


def req(mode="inpaint", image=IMG, mask=MASK, **kw):
    params = {k: v for k, v in kw.items() if k in Params.__dataclass_fields__}
    opts = {k: v for k, v in kw.items() if k in Options.__dataclass_fields__}
    return JobRequest(mode, Params(**params), Options(**opts), image=image, mask=mask)


BAD = [
    ("num_images", 0), ("num_images", 5), ("num_images", 2.5), ("num_images", "2"),
    ("steps", 0), ("steps", 513), ("steps", -1),
    ("guidance", 0.99), ("guidance", 20.01), ("guidance", float("nan")),
    ("strength", -0.01), ("strength", 1.01),
    ("seed", -1), ("seed", 2**32), ("seed", 1.5),
    ("grow", -1), ("grow", 513), ("feather", -1), ("feather", 513),
    ("noise_level", -1), ("noise_level", 351),
    ("tile", 63), ("tile", 513),
    ("width", 63), ("width", 8200), ("width", 100), ("height", 60), ("height", 8200), ("height", 516),
    ("expand_left", -1), ("expand_top", 8193), ("expand_right", 2.5), ("expand_bottom", None),
]


@pytest.mark.parametrize("name,value", BAD)
def test_out_of_range_is_rejected_naming_parameter_and_range(name, value):
    mode = "generate" if name in ("width", "height") else "upscale" if name in ("noise_level", "tile") else "inpaint"
    kw = {name: value}
    if mode == "generate":
        kw = {"width": 512, "height": 512, **kw}
    with pytest.raises(ValidationError) as e:
        validate(req(mode, image=None if mode == "generate" else IMG, mask=None if mode != "inpaint" else MASK, **kw))
    assert e.value.parameter == name
    assert name in str(e.value)
    if name in RANGES:
        assert RANGES[name].describe() in str(e.value)


def test_defaults_are_the_products():
    p = Params()
    assert (p.negative_prompt, p.num_images, p.steps, p.guidance, p.strength, p.seed) == ("", 1, 25, 7.5, 0.8, None)


def test_valid_request_is_normalised():
    r = validate(req(seed=None, guidance=7, num_images=4.0))
    assert r.params.guidance == 7.0 and isinstance(r.params.guidance, float)
    assert r.params.num_images == 4 and isinstance(r.params.num_images, int)
    assert r.params.seed is None


@pytest.mark.parametrize("name,value", [("masked_content", "blur"), ("depth_source", "magic"), ("backend", "x"),
                                        ("mode", "paint")])
def test_choices(name, value):
    with pytest.raises(ValidationError) as e:
        if name == "mode":
            validate(req(mode=value))
        else:
            validate(req(**{name: value}))
    assert e.value.parameter == name


@given(st.integers(1, 512), st.floats(0.0, 1.0))
def test_steps_are_the_steps_that_run_at_any_strength(steps, strength):
    """Every valid steps × strength runs exactly ``steps`` steps: diffusers runs
    min(int(total × strength), total) of a ``total``-step schedule, starting near the asked noise level."""
    s = Schedule.of(steps, strength)
    assert min(int(s.total * s.strength), s.total) == steps
    assert steps <= s.total <= TRAIN_TIMESTEPS and 0.0 < s.strength <= 1.0
    effective = steps / s.total                          # the noise level the first step starts at
    if strength >= steps / TRAIN_TIMESTEPS:
        assert abs(effective - strength) <= strength / steps + 1e-9   # within one schedule step
    validate(req(strength=strength, steps=steps))        # never refused


def test_the_schedule_of_familiar_settings():
    assert (Schedule.of(25, 1.0).total, Schedule.of(25, 0.8).total, Schedule.of(1, 0.5).total) == (25, 32, 2)
    assert Schedule.of(10, 0.0).total == TRAIN_TIMESTEPS


def test_mask_size_and_buffer_length_are_checked():
    with pytest.raises(ValidationError) as e:
        validate(req(mask=buffer(rect_mask(16, 32, 0, 0, 4, 4), "GRAY_U8")))
    assert e.value.parameter == "mask"
    short = IMG.__class__(32, 32, "RGBA_U8", IMG.data[:-1])
    with pytest.raises(ValidationError) as e:
        validate(req(image=short))
    assert e.value.parameter == "image" and "bytes" in str(e.value)


def test_missing_image_and_prompt_type():
    with pytest.raises(ValidationError) as e:
        validate(req(image=None, mask=None))
    assert e.value.parameter == "image"
    with pytest.raises(ValidationError) as e:
        validate(req(prompt=3))
    assert e.value.parameter == "prompt"


def test_request_dict_round_trip():
    r = req(prompt="a cat", seed=5, grow=3)
    d = r.to_dict()
    back = JobRequest.from_dict(d, {"image": IMG.data, "mask": MASK.data})
    assert back == r
    with pytest.raises(ValidationError):
        JobRequest.from_dict({**d, "params": {"bogus": 1}}, {"image": IMG.data, "mask": MASK.data})
    with pytest.raises(ValidationError):
        JobRequest.from_dict(d, {"image": IMG.data})
