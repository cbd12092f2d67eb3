"""Control layers (issue 19): the Control contract, the ControlNet catalogue entries and their resolver,
the shape check, and tiny ControlNets through generate (text and image), inpaint and several at once, with
start/end checked by the steps at which the control's residuals reach the UNet."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from core.contract import controls as C
from core.contract.catalog import CATALOG, CONTROLNETS
from core.contract.jobs import ImageBuffer, JobRequest, Options, Params, validate
from core.contract.params import ValidationError

SIZE = 128


def rgba(seed: int = 0, size: int = SIZE) -> ImageBuffer:
    a = np.random.RandomState(seed).randint(0, 256, (size, size, 4), dtype=np.uint8)
    a[..., 3] = 255
    return ImageBuffer(size, size, "RGBA_U8", a.tobytes())


def lines(size: int = SIZE, fmt: str = "RGBA_U8") -> ImageBuffer:
    """White strokes on black: what a scribble or edge control looks like."""
    a = np.zeros((size, size, 4), np.float32)
    a[size // 4: size // 4 + 3, 8:-8, :3] = 1.0
    a[8:-8, size // 2: size // 2 + 3, :3] = 1.0
    a[..., 3] = 1.0
    if fmt == "RGBA_F32":
        return ImageBuffer(size, size, fmt, a.astype("<f4").tobytes(), linear=True)
    return ImageBuffer(size, size, fmt, (a * 255).astype(np.uint8).tobytes())


def full_mask(size: int = SIZE) -> ImageBuffer:
    m = np.zeros((size, size), np.uint8)
    m[16:-16, 16:-16] = 255
    return ImageBuffer(size, size, "GRAY_U8", m.tobytes())


# --- the contract -------------------------------------------------------------------------------


@pytest.mark.parametrize("change, field", [
    (dict(type="normal"), "controls[0].type"),
    (dict(strength=2.5), "controls[0].strength"),
    (dict(strength=-0.1), "controls[0].strength"),
    (dict(start=0.6, end=0.5), "controls[0].end"),
    (dict(end=1.5), "controls[0].end"),
    (dict(start=float("nan")), "controls[0].start"),
])
def test_bad_control_names_its_field(change, field):
    base = dict(type="canny", image=lines(), strength=1.0, start=0.0, end=1.0)
    req = JobRequest("generate", Params(), Options(width=128, height=128), controls=(C.Control(**{**base, **change}),))
    with pytest.raises(ValidationError) as e:
        validate(req)
    assert e.value.parameter == field
    assert field in str(e.value)


def test_control_on_a_mode_without_controls_is_refused():
    req = JobRequest("upscale", image=rgba(), controls=(C.Control("canny", lines()),))
    with pytest.raises(ValidationError) as e:
        validate(req)
    assert e.value.parameter == "controls"


def test_request_with_controls_round_trips_through_the_wire_form():
    c0 = C.Control("canny", lines(), 0.7, 0.1, 0.9, origin=(0, 0))
    c1 = C.Control("depth", lines(fmt="RGBA_F32"), 1.5, 0.0, 0.5, model="/x/cn")
    req = JobRequest("inpaint", Params(prompt="p"), image=rgba(), mask=full_mask(), controls=(c0, c1))
    d = json.loads(json.dumps(req.to_dict()))
    assert set(d["buffers"]) == {"image", "mask", "control0", "control1"}
    back = JobRequest.from_dict(d, {k: b.data for k, b in req.buffers().items()})
    # (Params' loras/embeddings come back as lists from JSON: compared apart from the controls' concern)
    assert (back.controls, back.image, back.mask, back.origin) == (req.controls, req.image, req.mask, req.origin)


def test_control_bytes_missing_are_refused():
    req = JobRequest("generate", Params(), Options(width=128, height=128), controls=(C.Control("canny", lines()),))
    d = req.to_dict()
    d["buffers"].pop("control0")
    with pytest.raises(ValidationError) as e:
        JobRequest.from_dict(d, {})
    assert e.value.parameter == "controls[0].image"


@pytest.mark.parametrize("text, want", [
    ("canny:a.png", ("canny", "a.png", 1.0, 0.0, 1.0)),
    ("line-art:dir/b.png:0.5", ("lineart", "dir/b.png", 0.5, 0.0, 1.0)),
    ("softedge:b.png:1.2:0.1:0.6", ("softedge", "b.png", 1.2, 0.1, 0.6)),
    ("depth:C:\\img\\d.png:0.8", ("depth", "C:\\img\\d.png", 0.8, 0.0, 1.0)),
])
def test_cli_spec(text, want):
    assert C.parse_spec(text) == want


@pytest.mark.parametrize("text", ["canny", "wobble:a.png", "canny:a.png:x", "canny:a.png:1:0.5", ":a.png"])
def test_bad_cli_spec_is_one_line(text):
    with pytest.raises(ValueError) as e:
        C.parse_spec(text)
    assert "\n" not in str(e.value)


# --- catalogue and resolver -----------------------------------------------------------------------


def test_catalogue_has_an_optional_sd21_controlnet_per_type():
    for t in C.CONTROLNET_TYPES:
        spec = CATALOG[CONTROLNETS[t]]
        assert spec.optional and spec.pipeline == "ControlNetModel" and spec.repo_id == "thibaud/controlnet-sd21"
        assert spec.files and all(f.endswith(".safetensors") for f in spec.files)
        assert spec.install_hint() == f"python -m installer models download controlnet-{t}"


def test_sd21_config_is_the_controlnet_of_the_sd21_unet():
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    from core.devtools.tiny_models import _load_config, default_configs_dir
    from core.models.controlnets import SD21_CONFIG

    try:
        cfg = _load_config(default_configs_dir(), "unet-2-1-768v.json")
    except FileNotFoundError:
        pytest.skip("the SD2 reference configs are not here")
    with torch.device("meta"):
        made = dict(ControlNetModel.from_unet(UNet2DConditionModel(**cfg)).config)
    for k, v in SD21_CONFIG.items():
        if not k.startswith("_"):
            assert (list(made[k]) if isinstance(made[k], tuple) else made[k]) == v, k


def test_missing_controlnet_names_the_install_command(tmp_path):
    from core.models import controlnets
    from core.models.resolver import ModelNotFound

    with pytest.raises(ModelNotFound) as e:
        controlnets.resolve("pose", models_dir=tmp_path, hub_cache=tmp_path / "hub")
    assert "python -m installer models download controlnet-pose" in str(e.value)


def test_controlnet_found_in_models_folder_and_hf_cache(tmp_path):
    from core.models import controlnets
    from core.models.resolver import resolve

    spec = CATALOG["controlnet-canny"]
    (tmp_path / "controlnet-canny").mkdir()
    f = tmp_path / "controlnet-canny" / spec.files[0]
    f.write_bytes(b"x")
    assert controlnets.resolve("canny", models_dir=tmp_path, hub_cache=tmp_path / "hub").path == f
    assert resolve("controlnet-canny", models_dir=tmp_path, hub_cache=tmp_path / "hub").path == f
    snap = tmp_path / "hub" / "models--thibaud--controlnet-sd21" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / spec.files[0]).write_bytes(b"y")
    found = controlnets.resolve("canny", models_dir=tmp_path / "none", hub_cache=tmp_path / "hub")
    assert (found.path, found.source) == (snap / spec.files[0], "hf-cache")


def test_pickle_controlnet_is_refused(tmp_path):
    from core.models import controlnets
    from core.models.resolver import UnsafeModelFile

    (tmp_path / "cn.pth").write_bytes(b"x")
    with pytest.raises(UnsafeModelFile):
        controlnets.resolve("canny", str(tmp_path / "cn.pth"), models_dir=tmp_path)


# --- tiny ControlNets through the jobs ------------------------------------------------------------


@pytest.fixture(scope="module")
def cn(tiny_root, tmp_path_factory):
    from core.devtools.tiny_models import build_controlnet

    for t in ("canny", "depth"):
        build_controlnet(tiny_root / CONTROLNETS[t], seed={"canny": 0, "depth": 7}[t])
    return build_controlnet(tmp_path_factory.mktemp("other") / "sd15-like", cross_attention_dim=24)


def run(models, req):
    from core.pipelines import run_job

    return run_job(req, models)


def pixels(result):
    return np.frombuffer(result.patches[0].image.data, np.uint8)


class ResidualSpy:
    """Records, per UNet call, whether ControlNet residuals reached it (nonzero)."""

    def __init__(self, unet):
        self.calls: list[bool] = []
        self.unet = unet

    def __enter__(self):
        def hook(module, args, kwargs):
            mid = kwargs.get("mid_block_additional_residual")
            self.calls.append(bool(mid is not None and mid.abs().max() > 0))

        self.handle = self.unet.register_forward_pre_hook(hook, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def base_unet(models, kind: str):
    """The UNet a job of ``kind`` runs (restyle loads its model without the depth estimator)."""
    return models.get(kind, **({"without_depth_estimator": True} if kind == "restyle" else {})).pipe.unet


@pytest.mark.parametrize("mode", ["generate", "generate-image", "inpaint", "restyle"])
def test_start_and_end_are_the_steps_where_residuals_reach_the_unet(exact_models, cn, mode):
    kind = mode.split("-")[0]
    image = rgba() if mode != "generate" else None
    mask = full_mask() if mode == "inpaint" else None
    ctl = C.Control("canny", lines(), 1.0, 0.3, 0.7)
    # guidance 1: one UNet call per step; 10 steps at any strength (steps are the steps that run).
    req = JobRequest(kind, Params(steps=10, guidance=1.0, seed=3, strength=0.6),
                     Options(width=128, height=128) if kind == "generate" else Options(),
                     image=image, mask=mask, controls=(ctl,))
    unet = base_unet(exact_models, kind)
    with ResidualSpy(unet) as spy:
        res = run(exact_models, req)
    assert spy.calls == [False] * 3 + [True] * 4 + [False] * 3
    assert res.timings["controlnets"] == ["controlnet-canny"]


def test_control_changes_the_picture_and_strength_zero_does_not(exact_models, cn):
    def gen(controls):
        return pixels(run(exact_models, JobRequest("generate", Params(steps=3, seed=5), Options(width=128, height=128),
                                                   controls=controls)))

    plain = gen(())
    assert not np.array_equal(plain, gen((C.Control("canny", lines(), 1.0),)))
    assert np.array_equal(plain, gen((C.Control("canny", lines(), 0.0),)))


def test_several_controls_at_once_and_outside_pixels_unchanged(exact_models, cn):
    img, mask = rgba(1), full_mask()
    controls = (C.Control("canny", lines(), 1.0, 0.0, 0.5),
                C.Control("depth", lines(fmt="RGBA_F32"), 0.8, 0.2, 1.0))
    req = JobRequest("inpaint", Params(steps=4, seed=2), image=img, mask=mask, controls=controls)
    unet = exact_models.get("inpaint").pipe.unet
    with ResidualSpy(unet) as spy:
        res = run(exact_models, req)
    assert all(spy.calls)   # canny covers the first half, depth the rest
    assert res.timings["controlnets"] == ["controlnet-canny", "controlnet-depth"]
    from core.pipelines.regionjob import composite

    out = composite(validate(req), res.patches[0])
    src = np.frombuffer(img.data, np.uint8).reshape(SIZE, SIZE, 4)
    outside = np.frombuffer(mask.data, np.uint8).reshape(SIZE, SIZE) == 0
    assert np.array_equal(out[outside], src[outside])


def test_controlnet_for_another_base_is_refused_naming_the_file(exact_models, cn):
    req = JobRequest("generate", Params(steps=2, seed=1), Options(width=128, height=128),
                     controls=(C.Control("canny", lines(), model=str(cn)),))
    with pytest.raises(ValidationError) as e:
        run(exact_models, req)
    assert e.value.parameter == "controls[0].model"
    assert str(cn) in str(e.value) and "another base model" in str(e.value)


def test_control_of_another_size_is_refused_not_stretched(exact_models, cn):
    req = JobRequest("inpaint", Params(steps=2, seed=1), image=rgba(), mask=full_mask(),
                     controls=(C.Control("canny", lines(size=96)),))
    with pytest.raises(ValidationError) as e:
        run(exact_models, req)
    assert e.value.parameter == "controls[0].image"
    assert "96x96" in str(e.value) and "never stretched" in str(e.value)


# --- the installer ---------------------------------------------------------------------------------


def test_plan_of_a_controlnet_is_its_one_safetensors_file():
    from installer.hub_plan import PlanError, RemoteFile, plan_files

    spec = CATALOG["controlnet-lineart"]
    files = [RemoteFile(p, 10, "0" * 64) for p in (spec.files[0], "control_v11p_sd21_lineart.ckpt", "README.md",
                                                   "control_v11p_sd21_canny.safetensors")]
    assert [f.path for f in plan_files(spec.pipeline, files, only=spec.files)] == [spec.files[0]]
    with pytest.raises(PlanError, match="no control_v11p_sd21_lineart.safetensors"):
        plan_files(spec.pipeline, files[1:], only=spec.files)


def test_download_of_a_controlnet_through_the_hub_api_then_the_resolver_finds_it(monkeypatch, tmp_path):
    import hashlib

    from huggingface_hub import constants

    from core.models import controlnets
    from installer.download import download_model

    from .fake_hub import FakeHub, Repo

    for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    spec = CATALOG["controlnet-canny"]
    weights = b"\x01" * 4096
    h = FakeHub()
    h.repos[spec.repo_id] = Repo(hashlib.sha1(b"cn").hexdigest(), {
        spec.files[0]: weights, "control_v11p_sd21_canny.ckpt": b"\x80pickle" * 32, "README.md": b"# cn\n"})
    handle = h.start()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", handle.url)
    try:
        rep = download_model(spec, cache_dir=tmp_path / "hf", log=lambda m: None)
    finally:
        handle.stop()
    assert [f.path for f in rep.files] == [spec.files[0]]
    assert not any(".ckpt" in r.path or "README" in r.path for r in h.log)
    found = controlnets.resolve("canny", models_dir=tmp_path / "none", hub_cache=tmp_path / "hf")
    assert found.source == "hf-cache" and found.path.read_bytes() == weights


@pytest.mark.parametrize("mode", ["generate", "generate-image", "inpaint"])
def test_controls_run_with_the_chosen_sampler_and_the_tiny_autoencoder(exact_models, cn, mode):
    """The ControlNet pipelines take the job's sampler (recorded as run) and decode with TAESD when the
    job asks for it: the residuals still reach the UNet, and no 'not installed' warning."""
    from core.pipelines.common import TINY_MISSING

    kind = "inpaint" if mode == "inpaint" else "generate"
    image = rgba() if mode != "generate" else None
    mask = full_mask() if mode == "inpaint" else None
    req = JobRequest(kind, Params(steps=4, guidance=1.0, seed=3, strength=0.6),
                     Options(width=128, height=128, sampler="euler", vae="tiny"),
                     image=image, mask=mask, controls=(C.Control("canny", lines(), 1.0),))
    with ResidualSpy(exact_models.get(kind).pipe.unet) as spy:
        res = run(exact_models, req)
    assert spy.calls and all(spy.calls)
    assert res.options.sampler == "euler" and TINY_MISSING not in res.warnings
    assert res.timings["controlnets"] == ["controlnet-canny"]
    tiny = pixels(res)
    full = pixels(run(exact_models, replace(req, options=replace(req.options, vae="full"))))
    assert tiny.shape == full.shape and not np.array_equal(tiny, full)    # another decoder made it


def test_controlled_restyle_is_the_depth_restyle_at_strength_zero_and_keeps_outside_pixels(exact_models, cn):
    """Restyle with controls runs the depth model through the ControlNet image-to-image pipeline
    (``restyle.DepthUNet`` appends the depth channel): at control strength 0 its pixels are the plain
    depth restyle's, bit for bit; a control changes them; outside the selection nothing changes."""
    from core.pipelines.regionjob import composite

    img, mask = rgba(4), full_mask()
    req = JobRequest("restyle", Params(steps=3, seed=6, strength=0.7), image=img, mask=mask)

    def with_control(strength):
        return run(exact_models, replace(req, controls=(C.Control("canny", lines(), strength, 0.0, 1.0),)))

    plain, zero, one = pixels(run(exact_models, req)), with_control(0.0), with_control(1.0)
    assert np.array_equal(plain, pixels(zero))
    assert not np.array_equal(plain, pixels(one))
    assert one.timings["controlnets"] == ["controlnet-canny"]
    out = composite(validate(req), one.patches[0])
    src = np.frombuffer(img.data, np.uint8).reshape(SIZE, SIZE, 4)
    outside = np.frombuffer(mask.data, np.uint8).reshape(SIZE, SIZE) == 0
    assert np.array_equal(out[outside], src[outside])


def test_expand_with_a_control_of_the_old_canvas(exact_models, cn):
    """Each expand pass runs the ControlNet inpaint pipeline with the control cut to its window: the
    residuals reach the UNet from start to end in every pass; the control has no pixels over the new
    border (said in the result, never stretched); the old pixels stay as they were (alpha 0 there)."""
    from core.pipelines.expand import composite

    img = rgba(3)
    req = JobRequest("expand", Params(steps=4, guidance=1.0, seed=2, strength=0.8),
                     Options(expand_left=0, expand_top=0, expand_right=64, expand_bottom=0),
                     image=img, controls=(C.Control("canny", lines(), 1.0, 0.5, 1.0),))
    with ResidualSpy(exact_models.get("expand").pipe.unet) as spy:
        res = run(exact_models, req)
    passes = res.timings["passes"]
    assert passes >= 1 and spy.calls == [False, False, True, True] * passes     # 4 steps a pass, from the half
    assert res.timings["controlnets"] == ["controlnet-canny"]
    assert any("control 1 (canny) has no pixels over part of the new border" in w for w in res.warnings)
    out = composite(validate(req), res.patches[0])
    assert np.array_equal(out[:, :SIZE], np.frombuffer(img.data, np.uint8).reshape(SIZE, SIZE, 4))
    plain = run(exact_models, replace(req, controls=()))
    assert not np.array_equal(pixels(plain), pixels(res))


def test_provenance_records_follow_the_controls_with_a_reference_between():
    """The result's records: one per control in the request's order; the ControlNets' names go to the
    controls that have one, a reference image's record has none; no controls run, no records."""
    from core.pipelines.base import used_controls

    req = JobRequest("generate", Params(), Options(width=128, height=128),
                     controls=(C.Control("canny", lines(), 0.5), C.Control(C.REFERENCE, lines(), 0.7),
                               C.Control("depth", lines(), 1.0, 0.2, 0.6)))
    got = used_controls(req, ["cn-canny", "cn-depth"])
    assert [(r["type"], r["controlnet"], r["strength"]) for r in got] == [
        ("canny", "cn-canny", 0.5), ("reference", None, 0.7), ("depth", "cn-depth", 1.0)]
    assert (got[2]["start"], got[2]["end"]) == (0.2, 0.6)
    assert used_controls(replace(req, controls=()), []) == ()
