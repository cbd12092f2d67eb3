"""LoRAs and textual-inversion embeddings: requests, files checked by their shapes, applied through
diffusers' own loaders for one job only (never reloading the base model, never leaking into the next job)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from core.contract import params as P
from core.contract.jobs import JobRequest, Params, validate
from core.contract.params import ValidationError
from core.devtools import tiny_adapters as T
from core.pipelines import run_job

from .conftest import require
from .helpers import inpaint_request, rect_mask, rgba_u8


def need_peft():
    require(importlib.util.find_spec("peft") is not None,
            "peft is not installed in this environment (pyproject lists it: ./test.sh installs it)")


@pytest.fixture(scope="module")
def files(tiny_root, tmp_path_factory):
    d = tmp_path_factory.mktemp("adapters")
    model = tiny_root / "sd2-inpainting"
    return {
        "lora": T.save(T.lora_state(model, seed=1), d / "loras" / "tiny-lora.safetensors"),
        "lora2": T.save(T.lora_state(model, seed=2, text_encoder=False), d / "loras" / "other.safetensors"),
        "sd15": T.save(T.lora_state(model, context_width=768, text_width=768), d / "sd15-lora.safetensors"),
        "sdxl": T.save(T.lora_state(model, sdxl=True), d / "sdxl-lora.safetensors"),
        "emb": T.save(T.embedding_state(model, seed=3), d / "embeddings" / "tinystyle.safetensors"),
        "emb768": T.save(T.embedding_state(model, width=768), d / "sd15style.safetensors"),
        "dir": d,
    }


def patch_bytes(res):
    return [p.image.data for p in res.patches]


def request(**params):
    img = rgba_u8(64, 64, seed=4)
    return inpaint_request(img, rect_mask(64, 64, 16, 16, 48, 48), steps=2, seed=7, **params)


# --- the request -----------------------------------------------------------------------------------

@pytest.mark.parametrize("loras, match", [
    ([["a.pt", 1.0]], "not a .safetensors file"),
    ([["a.ckpt", 1.0]], "pickles"),
    ([["a.safetensors", 2.5]], r"weight of a.safetensors must be a number in -2–2"),
    ([["a.safetensors", float("nan")]], "weight"),
    ([["a.safetensors", True]], "weight"),
    ([["a.safetensors", 1], ["a.safetensors", 0.5]], "given twice"),
    ([["", 1]], "file name or path"),
    ([[f"{i}.safetensors", 1] for i in range(9)], "at most 8"),
    ("a.safetensors", "list"),
])
def test_bad_loras_are_refused_naming_the_field(loras, match):
    with pytest.raises(ValidationError, match=match) as e:
        validate(request(loras=loras))
    assert e.value.parameter == "loras"


def test_good_loras_and_embeddings_are_normalised_and_survive_the_wire():
    req = validate(request(loras=[["x/a.safetensors", 1], ["b.safetensors", -2]], embeddings=["e.safetensors"]))
    assert req.params.loras == (("x/a.safetensors", 1.0), ("b.safetensors", -2.0))
    assert req.params.embeddings == ("e.safetensors",)
    again = validate(JobRequest.from_dict(req.to_dict(), {k: b.data for k, b in req.buffers().items()}))
    assert again.params == req.params


@pytest.mark.parametrize("emb, match", [(["my style.safetensors"], "one word"), (["a.bin"], "not a .safetensors"),
                                        (["x/a.safetensors", "y/a.safetensors"], "two embeddings are called 'a'")])
def test_bad_embeddings_are_refused(emb, match):
    with pytest.raises(ValidationError, match=match) as e:
        validate(request(embeddings=emb))
    assert e.value.parameter == "embeddings"


def test_modes_without_a_prompt_model_take_no_lora():
    from core.contract.jobs import Options

    from .helpers import buffer

    req = JobRequest("fill", Params(loras=(("a.safetensors", 1.0),)), Options(),
                     image=buffer(rgba_u8(32, 32)), mask=buffer(rect_mask(32, 32, 4, 4, 20, 20), "GRAY_U8"))
    with pytest.raises(ValidationError, match="fill takes no loras"):
        validate(req)
    assert P.embedding_token("C:\\art\\tok.safetensors") == "tok"


# --- files and shapes ------------------------------------------------------------------------------

def test_files_are_found_by_name_in_the_models_folder_or_by_path(files):
    from core.models import adapters

    d = files["dir"]
    assert adapters.find("tiny-lora.safetensors", "loras", d) == files["lora"]
    assert adapters.find(str(files["sd15"]), "loras", d) == files["sd15"]
    with pytest.raises(ValidationError, match="not found: expected an existing .safetensors LoRA file") as e:
        adapters.find("missing.safetensors", "loras", d)
    assert e.value.parameter == "loras"
    listed = adapters.installed(d)
    assert [f["name"] for f in listed["loras"]] == ["other.safetensors", "tiny-lora.safetensors"]
    assert [f["name"] for f in listed["embeddings"]] == ["tinystyle.safetensors"]


def test_shapes_tell_the_base_model(files, tmp_path):
    from core.models import adapters

    assert adapters.inspect_lora(files["lora"]) == adapters.AdapterShape(32, 32, False)
    assert adapters.inspect_lora(files["sd15"]).cross_attention == 768
    assert adapters.inspect_lora(files["sdxl"]).sdxl
    assert adapters.inspect_embedding(files["emb"]).text_width == 32
    with pytest.raises(ValidationError, match="made for Stable Diffusion 1.x .768-wide cross-attention"):
        adapters.check_fits(files["sd15"], "loras", adapters.inspect_lora(files["sd15"]), 1024, 1024)
    bad = tmp_path / "junk.safetensors"
    bad.write_bytes(b"\xff" * 64)
    with pytest.raises(ValidationError, match="not a readable .safetensors"):
        adapters.read_header(bad)


# --- applied to a job ------------------------------------------------------------------------------

def test_a_lora_changes_the_result_and_leaves_nothing_behind(files, exact_models):
    """Pixel for pixel: no LoRA, LoRA, no LoRA again gives the first result exactly; the base model is
    loaded once; weight 0 is the base model."""
    need_peft()
    base = patch_bytes(run_job(request(), exact_models))
    loads = exact_models.loads
    lora = [[str(files["lora"]), 1.0]]
    with_lora = patch_bytes(run_job(request(loras=lora), exact_models))
    assert with_lora != base
    assert patch_bytes(run_job(request(), exact_models)) == base
    assert patch_bytes(run_job(request(loras=[[str(files["lora"]), 0.0]]), exact_models)) == base
    minus = patch_bytes(run_job(request(loras=[[str(files["lora"]), -1.0]]), exact_models))
    assert minus not in (base, with_lora)
    both = patch_bytes(run_job(request(loras=lora + [[str(files["lora2"]), 0.7]]), exact_models))
    assert both not in (base, with_lora)
    assert patch_bytes(run_job(request(loras=lora), exact_models)) == with_lora      # repeatable
    assert patch_bytes(run_job(request(), exact_models)) == base
    assert exact_models.loads == loads
    pipe = exact_models.loaded()[0].pipe
    assert not any("lora" in n for n, _ in pipe.unet.named_modules())
    assert not any("lora" in n for n, _ in pipe.text_encoder.named_modules())


def test_a_lora_by_name_from_the_models_folder(files, tiny_root, policy):
    need_peft()
    import shutil

    from core.models.manager import ModelManager
    models = files["dir"] / "models-with-inpaint"
    if not models.exists():
        shutil.copytree(tiny_root / "sd2-inpainting", models / "sd2-inpainting")
        shutil.copytree(files["dir"] / "loras", models / "loras")
    mm = ModelManager(policy, models_dir=models, hub_cache=models / "no-cache")
    res = run_job(request(loras=[["tiny-lora.safetensors", 0.8]]), mm)
    assert res.params.loras == (("tiny-lora.safetensors", 0.8),)
    assert res.provenance(0)["params"]["loras"] == (("tiny-lora.safetensors", 0.8),)
    mm.unload_all()


@pytest.mark.parametrize("which, match", [("sd15", "made for Stable Diffusion 1.x"),
                                          ("sdxl", "is an SDXL LoRA")])
def test_a_lora_for_another_base_model_is_refused_by_shape(files, exact_models, which, match):
    loads = exact_models.loads
    with pytest.raises(ValidationError, match=match) as e:
        run_job(request(loras=[[str(files[which]), 1.0]]), exact_models)
    assert e.value.parameter == "loras"
    assert exact_models.loads == loads or exact_models.loads == loads + 1   # at most the base model's load


def test_an_embedding_is_its_word_for_one_job(files, exact_models):
    need_peft()
    prompt = "a tinystyle ball"
    base = patch_bytes(run_job(request(prompt=prompt), exact_models))
    pipe = exact_models.loaded()[0].pipe
    vocab, rows = len(pipe.tokenizer), pipe.text_encoder.get_input_embeddings().weight.shape[0]
    styled = patch_bytes(run_job(request(prompt=prompt, embeddings=[str(files["emb"])]), exact_models))
    assert styled != base
    assert (len(pipe.tokenizer), pipe.text_encoder.get_input_embeddings().weight.shape[0]) == (vocab, rows)
    assert patch_bytes(run_job(request(prompt=prompt), exact_models)) == base
    with pytest.raises(ValidationError, match="made for Stable Diffusion 1.x") as e:
        run_job(request(prompt=prompt, embeddings=[str(files["emb768"])]), exact_models)
    assert e.value.parameter == "embeddings"


def test_a_missing_file_fails_before_the_model_runs(files, exact_models):
    with pytest.raises(ValidationError, match="not found") as e:
        run_job(request(loras=[[str(files["dir"] / "gone.safetensors"), 1.0]]), exact_models)
    assert e.value.parameter == "loras"


def test_the_prompt_cache_knows_what_is_attached(files, exact_models):
    """The same prompt with and without a text-encoder LoRA must not share cached embeddings."""
    need_peft()
    a = patch_bytes(run_job(request(prompt="cache me"), exact_models))
    b = patch_bytes(run_job(request(prompt="cache me", loras=[[str(files["lora"]), 1.0]]), exact_models))
    c = patch_bytes(run_job(request(prompt="cache me", loras=[[str(files["lora"]), 1.0]]), exact_models))
    assert a != b and b == c


# --- the command line ------------------------------------------------------------------------------

def test_cli_lora_and_embedding_flags(files, tiny_root, tmp_path):
    """``--lora PATH[:WEIGHT]`` and ``--embedding PATH`` in a real process: a missing or pickled file is one
    line and exit 2 before any model loads; a good pair runs and its weight changes the image."""
    import os
    import subprocess
    import sys

    from PIL import Image

    from core.cli import lora_arg

    from .conftest import ROOT
    from .helpers import write_image_and_mask

    assert lora_arg("a.safetensors") == ("a.safetensors", 1.0)
    assert lora_arg("C:\\x\\a.safetensors:0.5") == ("C:\\x\\a.safetensors", 0.5)
    assert lora_arg("C:\\x\\a.safetensors") == ("C:\\x\\a.safetensors", 1.0)
    folder, _img, _mask = write_image_and_mask(tmp_path, 48, 48, 1, (12, 12, 36, 36))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)])))

    def run(*extra, out="out.png"):
        return subprocess.run([sys.executable, "-m", "core", "inpaint", "--model", str(tiny_root / "sd2-inpainting"),
                               "--image", folder / "in.png", "--mask", folder / "mask.png", "--prompt", "a tinystyle",
                               "--steps", "2", "--seed", "3", "--device", "cpu", "--dtype", "float32", "--quiet",
                               "--out", tmp_path / out, *map(str, extra)], capture_output=True, text=True, env=env,
                              cwd=ROOT, timeout=300)

    for extra, needle in ((["--lora", tmp_path / "nope.safetensors"], "--lora: "),
                          (["--lora", "x.pt"], "not a .safetensors file"),
                          (["--lora", f"{files['lora']}:3"], "must be a number in -2–2"),
                          (["--embedding", tmp_path / "gone.safetensors"], "--embedding: ")):
        p = run(*extra)
        assert p.returncode == 2, (extra, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1 and needle in p.stderr, p.stderr
        assert "Traceback" not in p.stderr
    if importlib.util.find_spec("peft") is None:
        return
    plain = run(out="plain.png")
    styled = run("--lora", f"{files['lora']}:0.9", "--embedding", files["emb"], out="styled.png")
    assert plain.returncode == 0 and styled.returncode == 0, styled.stderr
    a, b = (np.asarray(Image.open(tmp_path / n)) for n in ("plain.png", "styled.png"))
    assert a.shape == b.shape and not np.array_equal(a, b)


# --- what the engine lists -------------------------------------------------------------------------

def test_inventory_lists_imported_models_by_mode_and_the_adapter_files(files, tiny_root, tmp_path):
    """An imported model (a non-catalogue folder name) is offered for the modes of its pipeline class; LoRA
    and embedding files of the models folder are listed with their size; catalogue folders are not custom."""
    import shutil

    from core.models import inventory

    models = tmp_path / "models"
    shutil.copytree(tiny_root / "sd2-inpainting", models / "my-inpaint")
    shutil.copytree(tiny_root / "sd2-inpainting", models / "sd2-inpainting")
    shutil.copytree(files["dir"] / "loras", models / "loras")
    shutil.copytree(files["dir"] / "embeddings", models / "embeddings")
    [custom] = inventory.custom_entries(models, tmp_path / "no-cache")
    assert custom["key"] == "my-inpaint" and {"inpaint", "expand"} <= set(custom["modes"]) and custom["custom"]
    kinds = {(e["kind"], e["key"]) for e in inventory.adapter_entries(models)}
    assert kinds == {("lora", "tiny-lora.safetensors"), ("lora", "other.safetensors"),
                     ("embedding", "tinystyle.safetensors")}
    assert all(e["bytes"] > 0 for e in inventory.adapter_entries(models))
    assert inventory.modes_of("StableDiffusionPipeline")[0] == "generate"   # live too, since SD-Turbo
