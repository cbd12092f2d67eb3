"""``models download`` against a fake hub on 127.0.0.1 serving a tiny SD2-inpainting repo.

The repo looks like the real one: plain and fp16 safetensors, pickles beside them (``.bin``), the original
single-file checkpoints at the root and a README.  Only what the pipeline needs may be fetched.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

from core.contract.catalog import CATALOG
from installer import download
from installer.download import ChecksumError, HubUnreachable, NotEnoughSpace, download_model
from installer.hub_plan import RemoteFile, allow_patterns, plan_files

from .conftest import ROOT
from .fake_hub import FakeHub

SPEC = CATALOG["sd2-inpainting"]
REPO = SPEC.repo_id
UNET16 = "unet/diffusion_pytorch_model.fp16.safetensors"
VAE16 = "vae/diffusion_pytorch_model.fp16.safetensors"
CHUNK = 64 * 1024


@pytest.fixture(scope="module")
def repo_files(tiny_root, tmp_path_factory) -> dict[str, bytes]:
    """The tiny inpainting model as a hub repo: + fp16 variants of unet and vae, pickles, root checkpoints."""
    from safetensors.torch import load_file, save_file

    src = tiny_root / "sd2-inpainting"
    work = tmp_path_factory.mktemp("repo")
    files = {p.relative_to(src).as_posix(): p.read_bytes() for p in sorted(src.rglob("*"))
             if p.is_file() and not any(s.startswith(".") for s in p.relative_to(src).parts)}
    for comp in ("unet", "vae"):
        sd = load_file(str(src / comp / "diffusion_pytorch_model.safetensors"))
        out = work / f"{comp}.fp16.safetensors"
        save_file({k: v.half().contiguous() for k, v in sd.items()}, str(out), metadata={"format": "pt"})
        files[f"{comp}/diffusion_pytorch_model.fp16.safetensors"] = out.read_bytes()
    files["unet/diffusion_pytorch_model.bin"] = b"\x80\x04pickle" * 64
    files["text_encoder/pytorch_model.bin"] = b"\x80\x04pickle" * 64
    files["512-inpainting-ema.ckpt"] = b"\x80\x04ckpt" * 64
    files["512-inpainting-ema.safetensors"] = b"single file" * 64
    files["README.md"] = b"# tiny sd2 inpainting\n"
    return files


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """The fake hub is on this machine: never route its requests through a proxy from the environment."""
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def hub(repo_files, monkeypatch):
    """A running fake hub; huggingface_hub is put online (the test session is offline)."""
    from huggingface_hub import constants

    h = FakeHub()
    h.repos[REPO] = __import__("tests.fake_hub", fromlist=["Repo"]).Repo(
        hashlib.sha1(b"tiny-commit").hexdigest(), dict(repo_files))
    handle = h.start()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # huggingface_hub writes what it received in chunks of 10 MB; with these tiny files, 64 kB chunks
    # make a dropped connection leave bytes to resume from, as it does with real weights.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", CHUNK)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", handle.url)
    h.url = handle.url
    yield h
    handle.stop()


def cdn_gets(h: FakeHub, data: bytes) -> list:
    return h.requests_for("/cdn/" + hashlib.sha256(data).hexdigest())


def snapshot_files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_download_fetches_only_what_the_pipeline_needs_and_the_resolver_runs_it(hub, repo_files, tmp_path, policy):
    from core.models.manager import ModelManager
    from core.models.resolver import resolve
    from core.pipelines import run_job

    from .helpers import inpaint_request, rect_mask, rgba_u8

    cache = tmp_path / "hf"
    rep = download_model(SPEC, cache_dir=cache, log=lambda m: None)
    got = snapshot_files(rep.folder)
    assert UNET16 in got and VAE16 in got and "text_encoder/model.safetensors" in got
    assert "unet/diffusion_pytorch_model.safetensors" not in got  # the fp16 variant is preferred
    assert not any(f.endswith((".bin", ".ckpt", ".md")) or "/" not in f and f.endswith(".safetensors") for f in got)
    assert "model_index.json" in got and "diffusion_dock.json" in got
    for f in got:  # byte-identical to the hub's files
        assert (rep.folder / f).read_bytes() == repo_files[f], f
    assert (cache / f"models--{REPO.replace('/', '--')}" / "refs" / "main").read_text() == rep.commit
    assert rep.downloaded_bytes == sum(len(repo_files[f]) for f in got) and rep.reused_bytes == 0
    # Nothing that is not needed was even asked for.
    asked = " ".join(r.path for r in hub.log)
    assert ".bin" not in asked and ".ckpt" not in asked and "README" not in asked

    r = resolve("sd2-inpainting", models_dir=tmp_path / "empty", hub_cache=cache)
    assert r.source == "hf-cache" and r.path == rep.folder and r.variant == "fp16"
    models = ModelManager(policy, models_dir=tmp_path / "empty", hub_cache=cache)
    img = rgba_u8(96, 96, seed=3)
    res = run_job(inpaint_request(img, rect_mask(96, 96, 30, 30, 60, 60), steps=2), models)
    patch = np.frombuffer(res.patches[0].image.data, np.uint8)
    assert patch.size > 0 and res.patches[0].image.width > 0


def test_second_download_reuses_the_cache_without_fetching(hub, tmp_path):
    cache = tmp_path / "hf"
    download_model(SPEC, cache_dir=cache, log=lambda m: None)
    before = len(hub.log)
    rep = download_model(SPEC, cache_dir=cache, log=lambda m: None)
    new = hub.log[before:]
    assert [r.path.split("?")[0] for r in new] == [f"/api/models/{REPO}/revision/main"]  # metadata only
    assert {f.action for f in rep.files} == {"reused"} and rep.downloaded_bytes == 0


def test_dropped_connection_resumes_with_a_range_request(hub, repo_files, tmp_path):
    data = repo_files[UNET16]
    cut = len(data) // 3 // CHUNK * CHUNK  # the client writes whole chunks: cut on a chunk boundary
    hub.faults[UNET16] = [("drop", cut)]
    rep = download_model(SPEC, cache_dir=tmp_path / "hf", log=lambda m: None)
    gets = cdn_gets(hub, data)
    assert len(gets) == 2
    assert "range" not in gets[0].headers and gets[0].sent == cut
    assert gets[1].headers["range"] == f"bytes={cut}-" and gets[1].status == 206
    assert gets[1].sent == len(data) - cut  # only the rest travelled again
    assert (rep.folder / UNET16).read_bytes() == data


def test_interrupted_run_is_continued_by_the_next_run(hub, repo_files, tmp_path, capsys):
    """The connection breaks and the hub then fails: the command stops, keeps the partial file, and the
    next run asks only for the missing bytes."""
    data = repo_files[UNET16]
    cut = len(data) // 2 // CHUNK * CHUNK
    hub.faults[UNET16] = [("drop", cut), ("fail",)]
    cache = tmp_path / "hf"
    with pytest.raises(download.DownloadError) as err:
        download_model(SPEC, cache_dir=cache, log=lambda m: None)
    assert "answered HTTP 500 while sending" in str(err.value)
    assert "of it are kept: running the same command again continues" in str(err.value)
    partial = cache / f"models--{REPO.replace('/', '--')}" / "blobs" / (hashlib.sha256(data).hexdigest() + ".dd-partial")
    assert partial.stat().st_size == cut

    before = len(hub.log)
    rep = download_model(SPEC, cache_dir=cache, log=lambda m: None)
    gets = [r for r in hub.log[before:] if "/cdn/" + hashlib.sha256(data).hexdigest() in r.path]
    assert len(gets) == 1 and gets[0].headers["range"] == f"bytes={cut}-" and gets[0].sent == len(data) - cut
    unet = next(f for f in rep.files if f.path == UNET16)
    assert unet.action == "resumed" and unet.resumed_from == cut
    assert (rep.folder / UNET16).read_bytes() == data and not partial.exists()


def test_corrupted_transfer_is_detected_and_fetched_again(hub, repo_files, tmp_path):
    data = repo_files[VAE16]
    hub.faults[VAE16] = [("corrupt",)]
    hub.faults["unet/config.json"] = [("corrupt",)]  # a small file in git: checked by its git blob id
    logs = []
    rep = download_model(SPEC, cache_dir=tmp_path / "hf", log=logs.append)
    assert len(cdn_gets(hub, data)) == 2
    assert next(f for f in rep.files if f.path == VAE16).attempts == 2
    assert next(f for f in rep.files if f.path == "unet/config.json").attempts == 2
    assert any("checksum mismatch" in m and VAE16 in m for m in logs)
    assert (rep.folder / VAE16).read_bytes() == data
    assert (rep.folder / "unet/config.json").read_bytes() == repo_files["unet/config.json"]


def test_hub_serving_damaged_data_every_time_fails_clearly(hub, tmp_path):
    hub.faults[VAE16] = [("corrupt",)] * download.MAX_ATTEMPTS
    with pytest.raises(ChecksumError, match="still does not match"):
        download_model(SPEC, cache_dir=tmp_path / "hf", log=lambda m: None)


def test_file_damaged_on_disk_is_detected_and_fetched_again(hub, repo_files, tmp_path):
    cache = tmp_path / "hf"
    rep = download_model(SPEC, cache_dir=cache, log=lambda m: None)
    blob = (rep.folder / UNET16).resolve()
    raw = bytearray(blob.read_bytes())
    raw[len(raw) // 2] ^= 0x55  # same size, one byte flipped
    blob.write_bytes(bytes(raw))
    (rep.folder / "model_index.json").resolve().write_text("{}")
    logs = []
    before = len(hub.log)
    rep2 = download_model(SPEC, cache_dir=cache, log=logs.append)
    assert any(UNET16 in m and "sha256" in m for m in logs)
    assert any("model_index.json" in m for m in logs)
    refetched = {f.path for f in rep2.files if f.action != "reused"}
    assert refetched == {UNET16, "model_index.json"}
    assert len([r for r in hub.log[before:] if "/cdn/" in r.path]) == 1
    assert (rep2.folder / UNET16).read_bytes() == repo_files[UNET16]


def test_not_enough_disk_space_stops_before_writing(hub, tmp_path):
    Usage = namedtuple("Usage", "total used free")
    with pytest.raises(NotEnoughSpace, match="not enough disk space") as err:
        download_model(SPEC, cache_dir=tmp_path / "hf", log=lambda m: None,
                       disk_usage=lambda p: Usage(10**9, 10**9 - 10**6, 10**6))
    assert "MB" in str(err.value)
    assert not (tmp_path / "hf").exists() and not hub.requests_for("/resolve/")


def test_config_only_and_models_dir_layouts(hub, tmp_path):
    from core.models.resolver import resolve

    rep = download_model(SPEC, models_dir=tmp_path / "models", config_only=True, log=lambda m: None)
    got = snapshot_files(rep.folder)
    assert rep.folder == tmp_path / "models" / "configs" / "sd2-inpainting"
    assert "model_index.json" in got and not any(f.endswith(".safetensors") for f in got)
    rep = download_model(SPEC, models_dir=tmp_path / "models", log=lambda m: None)
    assert rep.folder == tmp_path / "models" / "sd2-inpainting"
    r = resolve("sd2-inpainting", models_dir=tmp_path / "models", hub_cache=tmp_path / "no-cache")
    assert r.source == "models-dir" and r.path == rep.folder and r.variant == "fp16"


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _cli(args, env_extra, tmp_path):
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), DD_MODELS_DIR=str(tmp_path / "models"), HF_HUB_OFFLINE="0",
               HF_HUB_DISABLE_PROGRESS_BARS="1", **env_extra)
    return subprocess.run([sys.executable, "-m", "installer", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=300)


def test_unreachable_hub_gives_one_clear_message(tmp_path):
    out = _cli(["models", "download", "sd2-inpainting"], {"HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}"},
               tmp_path)
    assert out.returncode == HubUnreachable.code
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: cannot reach the model hub at http://127.0.0.1:")
    assert "nothing was changed" in lines[0] and "Traceback" not in out.stderr


def test_cli_download_then_list(hub, tmp_path):
    out = _cli(["models", "download", "sd2-inpainting"], {"HF_ENDPOINT": hub.url}, tmp_path)
    assert out.returncode == 0, out.stderr
    folder = Path(out.stdout.strip())
    assert folder.parent.parent.name == f"models--{REPO.replace('/', '--')}"
    assert "every file verified" in out.stderr
    listed = _cli(["models", "list"], {}, tmp_path)
    assert listed.returncode == 0
    line = next(ln for ln in listed.stdout.splitlines() if "sd2-inpainting" in ln)
    assert line.split()[0] == "installed" and str(folder) in line and "MB" in line
    assert any(ln.split()[:2] == ["missing", "sd2-depth"] for ln in listed.stdout.splitlines())
    # Hub gone, model present: reported as installed, exit 0.
    again = _cli(["models", "download", "sd2-inpainting"], {"HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}"},
                 tmp_path)
    assert again.returncode == 0 and "already installed" in again.stderr


# --- the file plan (pure) ------------------------------------------------------------------------

def _files(*paths):
    return [RemoteFile(p, 10, hashlib.sha256(p.encode()).hexdigest() if p.endswith(".safetensors") else None)
            for p in paths]


def test_plan_prefers_fp16_and_never_takes_pickles():
    files = _files("model_index.json", "README.md", "v2-1_768-ema-pruned.ckpt", "v2-1_768-ema-pruned.safetensors",
                   "scheduler/scheduler_config.json", "tokenizer/vocab.json", "tokenizer/merges.txt",
                   "text_encoder/config.json", "text_encoder/model.safetensors", "text_encoder/model.fp16.safetensors",
                   "text_encoder/pytorch_model.bin", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                   "unet/diffusion_pytorch_model.fp16.safetensors", "unet/diffusion_pytorch_model.bin",
                   "unet/diffusion_flax_model.msgpack", "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
                   "feature_extractor/preprocessor_config.json")
    got = [f.path for f in plan_files("StableDiffusionPipeline", files)]
    assert got == ["feature_extractor/preprocessor_config.json", "model_index.json", "scheduler/scheduler_config.json",
                   "text_encoder/config.json", "tokenizer/merges.txt", "tokenizer/vocab.json", "unet/config.json",
                   "vae/config.json", "text_encoder/model.fp16.safetensors",
                   "unet/diffusion_pytorch_model.fp16.safetensors", "vae/diffusion_pytorch_model.safetensors"]
    assert [f.path for f in plan_files("StableDiffusionPipeline", files, prefer_fp16=False)][-3:] == [
        "text_encoder/model.safetensors", "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors"]
    configs = [f.path for f in plan_files("StableDiffusionPipeline", files, weights=False)]
    assert not any(p.endswith(".safetensors") for p in configs) and "model_index.json" in configs


def test_plan_sharded_variant_keeps_its_index_and_per_pipeline_components():
    files = _files("model_index.json", "unet/config.json",
                   "unet/diffusion_pytorch_model.safetensors.index.json",
                   "unet/diffusion_pytorch_model-00001-of-00002.safetensors",
                   "unet/diffusion_pytorch_model-00002-of-00002.safetensors",
                   "unet/diffusion_pytorch_model.safetensors.index.fp16.json",
                   "unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
                   "unet/diffusion_pytorch_model.fp16-00002-of-00002.safetensors",
                   "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors",
                   "depth_estimator/config.json", "depth_estimator/model.safetensors",
                   "low_res_scheduler/scheduler_config.json")
    unet = [f.path for f in plan_files("StableDiffusionDepth2ImgPipeline", files) if f.path.startswith("unet/")]
    assert unet == ["unet/config.json", "unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
                    "unet/diffusion_pytorch_model.fp16-00002-of-00002.safetensors",
                    "unet/diffusion_pytorch_model.safetensors.index.fp16.json"]
    depth = [f.path for f in plan_files("StableDiffusionDepth2ImgPipeline", files)]
    assert "depth_estimator/model.safetensors" in depth and "low_res_scheduler/scheduler_config.json" not in depth
    assert "low_res_scheduler/*.json" in allow_patterns("StableDiffusionUpscalePipeline")


def test_plan_refuses_a_repo_with_only_pickles_for_a_component():
    from installer.hub_plan import PlanError

    files = _files("model_index.json", "unet/diffusion_pytorch_model.bin", "vae/diffusion_pytorch_model.safetensors",
                   "text_encoder/model.safetensors")
    with pytest.raises(PlanError, match="only unet/diffusion_pytorch_model.bin"):
        plan_files("StableDiffusionPipeline", files)
    with pytest.raises(PlanError, match="not a diffusers pipeline"):
        plan_files("StableDiffusionPipeline", _files("v2-1_512-ema-pruned.safetensors"))


def test_a_full_disk_while_a_weight_arrives_stops_with_one_line_and_the_next_run_continues(
        hub, repo_files, tmp_path, monkeypatch):
    from .helpers import FillingFile, leftovers

    data = repo_files[UNET16]
    room = len(data) // 2 // CHUNK * CHUNK + 1000
    real = download._open_partial
    monkeypatch.setattr(download, "_open_partial", lambda p, mode: FillingFile(real(p, mode), {"left": room, "failures": 0}))
    cache = tmp_path / "hf"
    with pytest.raises(download.WriteFailed) as err:
        download_model(SPEC, cache_dir=cache, log=lambda m: None)
    partial = cache / f"models--{REPO.replace('/', '--')}" / "blobs" / (hashlib.sha256(data).hexdigest() + ".dd-partial")
    assert err.value.code == 2
    assert str(err.value).startswith(f"cannot write {partial}: No space left on device.")
    assert "of it are kept: running the same command again continues" in str(err.value)
    assert "Errno" not in str(err.value) and "OSError" not in str(err.value)
    storage = cache / f"models--{REPO.replace('/', '--')}"
    assert not (storage / "blobs" / hashlib.sha256(data).hexdigest()).exists()     # no final file
    assert not [p for p in storage.rglob("*") if p.as_posix().endswith(UNET16)]
    assert not (storage / "refs" / "main").exists() and not leftovers(cache)
    kept = partial.stat().st_size
    assert 0 < kept <= room
    monkeypatch.setattr(download, "_open_partial", real)      # space again
    rep = download_model(SPEC, cache_dir=cache, log=lambda m: None)
    unet = next(f for f in rep.files if f.path == UNET16)
    assert unet.action == "resumed" and unet.resumed_from == kept
    assert (rep.folder / UNET16).read_bytes() == data and not partial.exists()


@pytest.mark.parametrize("layout", ["cache", "folder"])
def test_a_full_disk_at_the_last_file_leaves_no_half_file_and_names_it(hub, tmp_path, monkeypatch, layout):
    from .helpers import disk_full_after, leftovers

    kw = {"cache_dir": tmp_path / "hf"} if layout == "cache" else {"models_dir": tmp_path / "models"}
    disk_full_after(monkeypatch, 3)        # the commit id (40 characters) does not fit
    with pytest.raises(download.WriteFailed) as err:
        download_model(SPEC, log=lambda m: None, **kw)
    final = (tmp_path / "hf" / f"models--{REPO.replace('/', '--')}" / "refs" / "main" if layout == "cache"
             else tmp_path / "models" / "sd2-inpainting" / ".cache" / "diffusion-dock" / "commit")
    assert str(err.value).startswith(f"cannot write {final}: No space left on device.") and err.value.code == 2
    assert not final.exists() and not leftovers(tmp_path)
