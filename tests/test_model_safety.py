"""No model folder, local or remote, can make diffusers or transformers run code of its own or unpickle a
weight file.  Each crafted folder below would write a marker file if its code ran or its pickle were
loaded; the resolver refuses the ones that carry code, and even handed straight to the loader (past the
resolver) nothing runs: only known pipeline classes, trust_remote_code off, safetensors only."""

import json
import pickle
import shutil

import pytest

from core.contract.params import ValidationError
from core.models import loader
from core.models.manager import ModelManager
from core.models.resolver import ModelError, ResolvedModel, UnsafeModelFile, resolve
from core.pipelines import run_job

from .helpers import inpaint_request, rect_mask, rgba_u8


class Payload:
    """Unpickling this writes the marker (what a malicious .bin would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def code(marker) -> str:
    return f"open({str(marker)!r}, 'w').write('ran')\nclass Evil:\n    pass\nEvilPipeline = EvilUNet = Evil\n"


def edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def craft(tiny_root, base, kind, marker):
    """A copy of the tiny inpainting model with one way of smuggling code or a pickle in."""
    folder = base / kind
    shutil.copytree(tiny_root / "sd2-inpainting", folder)
    index = folder / "model_index.json"
    if kind == "custom-pipeline-class":
        edit_json(index, _class_name=["evil_pipeline", "EvilPipeline"])
        (folder / "evil_pipeline.py").write_text(code(marker))
    elif kind == "diffusion-pipeline":
        edit_json(index, _class_name="DiffusionPipeline", custom_pipeline="evil_pipeline")
        (folder / "evil_pipeline.py").write_text(code(marker))
        (folder / "pipeline.py").write_text(code(marker))
    elif kind == "custom-component":
        edit_json(index, unet=["evil_unet", "EvilUNet"])
        (folder / "unet" / "evil_unet.py").write_text(code(marker))
    elif kind == "auto-map":
        edit_json(folder / "text_encoder" / "config.json", auto_map={"AutoModel": "modeling_evil.Evil"})
        (folder / "text_encoder" / "modeling_evil.py").write_text(code(marker))
    elif kind == "auto-map-tokenizer":
        edit_json(index, tokenizer=["transformers", "AutoTokenizer"])
        edit_json(folder / "tokenizer" / "tokenizer_config.json", auto_map={"AutoTokenizer": ["tok_evil.Evil", None]})
        (folder / "tokenizer" / "tok_evil.py").write_text(code(marker))
    elif kind == "pickle-beside-safetensors":
        (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps(Payload(marker)))
        (folder / "text_encoder" / "pytorch_model.bin").write_bytes(pickle.dumps(Payload(marker)))
    elif kind == "pickle-only":
        (folder / "text_encoder" / "model.safetensors").unlink()
        (folder / "text_encoder" / "pytorch_model.bin").write_bytes(pickle.dumps(Payload(marker)))
    elif kind == "pickle-extra-component":
        edit_json(index, image_encoder=["transformers", "CLIPVisionModelWithProjection"])
        (folder / "image_encoder").mkdir()
        shutil.copy(folder / "text_encoder" / "config.json", folder / "image_encoder" / "config.json")
        (folder / "image_encoder" / "pytorch_model.bin").write_bytes(pickle.dumps(Payload(marker)))
    return folder


REFUSED = ["custom-pipeline-class", "diffusion-pipeline", "custom-component", "auto-map", "auto-map-tokenizer",
           "pickle-only", "pickle-extra-component"]


def test_the_payload_really_runs_when_unpickled(tmp_path):
    marker = tmp_path / "sanity"
    pickle.loads(pickle.dumps(Payload(marker)))   # (what torch.load without weights_only would do)
    assert marker.read_text() == "ran"


@pytest.mark.parametrize("kind", REFUSED)
def test_a_folder_with_code_or_only_pickles_is_refused_and_nothing_runs(tiny_root, tmp_path, kind, models):
    marker = tmp_path / "marker"
    folder = craft(tiny_root, tmp_path, kind, marker)
    with pytest.raises(UnsafeModelFile):
        resolve(str(folder), models_dir=tmp_path / "none")
    req = inpaint_request(rgba_u8(16, 16), rect_mask(16, 16, 2, 2, 8, 8), steps=1)
    from dataclasses import replace

    with pytest.raises((ModelError, ValidationError)) as e:
        run_job(replace(req, model=str(folder)), models)
    assert getattr(e.value, "code", "") == "unsafe_model_file"
    # installed in the models folder and named (as a remote client would): refused the same way
    manager = ModelManager(models.policy, models_dir=tmp_path, hub_cache=tmp_path / "no-hub", capacity=1)
    with pytest.raises(ModelError):
        manager.get("inpaint", kind)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["custom-pipeline-class", "diffusion-pipeline", "custom-component", "auto-map",
                                  "auto-map-tokenizer", "pickle-beside-safetensors", "pickle-extra-component"])
def test_even_past_the_resolver_the_loader_runs_no_code_and_unpickles_nothing(tiny_root, tmp_path, kind, policy):
    """The second line: a ResolvedModel made by hand (no resolver checks) goes to load_pipeline."""
    marker = tmp_path / "marker"
    folder = craft(tiny_root, tmp_path, kind, marker)
    index = json.loads((folder / "model_index.json").read_text())
    name = index["_class_name"] if isinstance(index["_class_name"], str) else "EvilPipeline"
    model = ResolvedModel(kind, None, folder, "explicit", name, "epsilon")
    try:
        pipe = loader.load_pipeline(model, policy)
    except Exception:        # refused (unknown class, no safetensors for a component, ...): fine
        pipe = None
    assert not marker.exists()
    if kind == "pickle-beside-safetensors":   # this one loads, from its safetensors
        assert pipe is not None


def test_a_pickle_beside_safetensors_is_never_read_and_the_model_works(tiny_root, tmp_path, models):
    marker = tmp_path / "marker"
    folder = craft(tiny_root, tmp_path, "pickle-beside-safetensors", marker)
    assert resolve(str(folder), models_dir=tmp_path / "none").path == folder
    from dataclasses import replace

    res = run_job(replace(inpaint_request(rgba_u8(16, 16), rect_mask(16, 16, 2, 2, 8, 8), steps=1), model=str(folder)),
                  models)
    assert res.patches and not marker.exists()
