"""A remote client names models, ControlNets, LoRAs and embeddings by their installed names, never a path on the
server: one rule for ``serve --listen`` (files checked in the models folder) and the cluster gateway (names
checked by form; the workers hold the files)."""

from __future__ import annotations

import pytest

from core.contract import controls as C
from core.contract.jobs import ImageBuffer, JobRequest, Options, Params
from core.contract.params import ValidationError
from core.models import remote
from core.models.adapters import REMOTE_ADAPTER_RULE
from core.models.resolver import REMOTE_MODEL_RULE


def control_image() -> ImageBuffer:
    return ImageBuffer(8, 8, "RGBA_U8", bytes(8 * 8 * 4))


def request(model=None, control=None, loras=(), embeddings=()) -> JobRequest:
    controls = (C.Control("canny", control_image(), model=control),) if control is not None else ()
    return JobRequest("generate", Params(steps=2, loras=tuple((f, 1.0) for f in loras), embeddings=tuple(embeddings)),
                      Options(width=64, height=64), model=model, controls=controls)


@pytest.fixture()
def models_dir(tmp_path):
    (tmp_path / "my-finetune").mkdir()
    (tmp_path / "my-finetune" / "model_index.json").write_text("{}")
    (tmp_path / "loras").mkdir()
    (tmp_path / "loras" / "ink.safetensors").write_bytes(b"x")
    (tmp_path / "embeddings").mkdir()
    (tmp_path / "embeddings" / "style.safetensors").write_bytes(b"x")
    return tmp_path


ACCEPTED = [
    dict(),
    dict(model="sd2-1-base"),
    dict(model="my-finetune"),
    dict(control="controlnet-canny"),
    dict(control="my-finetune"),
    dict(loras=["ink.safetensors"], embeddings=["style.safetensors"]),
]

REFUSED = [   # (request, field): paths, parents, home and names not installed, each refused the same way
    (dict(model="/etc/passwd"), "model"),
    (dict(model="../my-finetune"), "model"),
    (dict(model="~/models/x"), "model"),
    (dict(control="/srv/models/controlnet"), "controls[0].model"),
    (dict(control="C:\\models\\cn.safetensors"), "controls[0].model"),
    (dict(loras=["/tmp/ink.safetensors"]), "loras"),
    (dict(loras=["../loras/ink.safetensors"]), "loras"),
    (dict(embeddings=["sub\\style.safetensors"]), "embeddings"),
]


@pytest.mark.parametrize("fields", ACCEPTED)
def test_installed_names_pass_both_checks(models_dir, fields):
    remote.check_request(request(**fields), models_dir)
    remote.check_names(request(**fields))


@pytest.mark.parametrize(("fields", "field"), REFUSED)
def test_paths_are_refused_by_both_checks_naming_the_field_and_nothing_of_the_server(models_dir, fields, field):
    for check in (lambda r: remote.check_request(r, models_dir), remote.check_names):
        with pytest.raises(ValidationError) as e:
            check(request(**fields))
        assert e.value.parameter == field
        assert REMOTE_MODEL_RULE in str(e.value) or REMOTE_ADAPTER_RULE in str(e.value)
        assert str(models_dir) not in str(e.value)


def test_a_name_not_installed_is_refused_on_the_engine_and_left_to_the_worker_on_the_gateway(models_dir):
    for fields, field in [(dict(model="not-here"), "model"), (dict(control="not-here"), "controls[0].model"),
                          (dict(loras=["missing.safetensors"]), "loras")]:
        with pytest.raises(ValidationError) as e:
            remote.check_request(request(**fields), models_dir)
        assert e.value.parameter == field
        remote.check_names(request(**fields))   # a plain name: the worker's models folder decides


def test_the_gateway_takes_the_models_its_cluster_config_names():
    remote.check_names(request(model="studio-v3"), known_models=("studio-v3",))
    with pytest.raises(ValidationError):
        remote.check_names(request(model="studio/v3"), known_models=("studio-v3",))
