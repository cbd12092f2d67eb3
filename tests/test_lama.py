"""LaMa: the architecture's layout against the official checkpoint, safetensors loading, and the
checkpoint converter (which must never run code from a pickle)."""

from __future__ import annotations

import builtins
import os
import pickle
import re
import sys
import types
import zipfile

import numpy as np
import pytest
import torch

from core.lama import convert as conv
from core.lama.infer import inpaint
from core.lama.model import BIG_LAMA, FourierUnit, LamaGenerator
from core.lama.weights import TINY, build_tiny, infer_config, load_generator, read_safetensors, save_generator
from core.models.resolver import ModelNotFound, UnsafeModelFile

X = torch.rand(1, 4, 64, 48, generator=torch.Generator().manual_seed(0))

# Tensors of the official big-lama generator (configs/training/big-lama.yaml, saicinpainting ffc.py),
# as they appear under "generator." in best.ckpt: name → shape.
OFFICIAL = {
    "model.1.ffc.convl2l.weight": (64, 4, 7, 7),
    "model.1.bn_l.running_var": (64,),
    "model.2.ffc.convl2l.weight": (128, 64, 3, 3),
    "model.3.ffc.convl2l.weight": (256, 128, 3, 3),
    "model.4.ffc.convl2l.weight": (128, 256, 3, 3),
    "model.4.ffc.convl2g.weight": (384, 256, 3, 3),
    "model.4.bn_g.running_mean": (384,),
    "model.5.conv1.ffc.convl2l.weight": (128, 128, 3, 3),
    "model.5.conv1.ffc.convl2g.weight": (384, 128, 3, 3),
    "model.5.conv1.ffc.convg2l.weight": (128, 384, 3, 3),
    "model.5.conv1.ffc.convg2g.conv1.0.weight": (192, 384, 1, 1),
    "model.5.conv1.ffc.convg2g.conv1.1.running_mean": (192,),
    "model.5.conv1.ffc.convg2g.fu.conv_layer.weight": (384, 384, 1, 1),
    "model.5.conv1.ffc.convg2g.fu.bn.weight": (384,),
    "model.5.conv1.ffc.convg2g.conv2.weight": (384, 192, 1, 1),
    "model.22.conv2.bn_g.num_batches_tracked": (),
    "model.24.weight": (512, 256, 3, 3),       # ConvTranspose2d: (in, out, k, k)
    "model.24.bias": (256,),
    "model.25.running_var": (256,),
    "model.27.weight": (256, 128, 3, 3),
    "model.30.weight": (128, 64, 3, 3),
    "model.34.weight": (3, 64, 7, 7),
    "model.34.bias": (3,),
}


def test_big_lama_layout_matches_the_official_checkpoint():
    with torch.device("meta"):
        model = LamaGenerator(BIG_LAMA)
    sd = model.state_dict()
    for key, shape in OFFICIAL.items():
        assert tuple(sd[key].shape) == shape, key
    assert len(model.model) == 36
    blocks = {k.split(".")[1] for k in sd if ".conv1.ffc." in k}
    assert blocks == {str(i) for i in range(5, 23)}                 # 18 residual blocks
    assert not any(x in k for k in sd for x in ("lfu", "gate", "downsample", "se."))
    params = sum(p.numel() for p in model.parameters())
    assert round(params / 1e6, 1) == 51.0                            # "Big LaMa, 51M parameters"
    assert infer_config(sd) == BIG_LAMA


def test_fourier_unit_channel_layout():
    """Spectrum channels are interleaved (2k real, 2k+1 imaginary of channel k), as in the reference;
    a weight that copies channel 1 to channel 0 must therefore move the imaginary part to the real one."""
    fu = FourierUnit(1, 1).eval()
    with torch.no_grad():
        fu.conv_layer.weight.zero_()
        fu.conv_layer.weight[0, 1] = 1.0
        fu.bn.running_var.fill_(1.0 - fu.bn.eps)
    x = torch.rand(1, 1, 8, 10, generator=torch.Generator().manual_seed(1))
    y = fu(x)[0, 0].detach().numpy()
    spec = np.fft.rfft2(x[0, 0].numpy(), norm="ortho")
    expected = np.fft.irfft2(np.maximum(spec.imag, 0).astype(np.complex128), s=(8, 10), norm="ortho")
    assert np.allclose(y, expected, atol=1e-5)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = build_tiny(tmp_path_factory.mktemp("lama") / "big-lama.safetensors", seed=2)
    return path, load_generator(path)


def test_tiny_lama_loads_from_safetensors_and_runs(tiny, tmp_path):
    path, model = tiny
    tensors, meta = read_safetensors(path)
    assert meta["format"] == "diffusion-dock-lama" and all(k.startswith("model.") for k in tensors)
    assert model.config == TINY and not model.training
    y = model(X)
    assert y.shape == (1, 3, 64, 48) and 0 <= float(y.min()) and float(y.max()) <= 1
    assert torch.equal(model(X), y)                                  # deterministic (eval batch norms)
    # every tensor matters: a file without our metadata, keyed like best.ckpt, loads to the same model
    save_file_plain = tmp_path / "plain.safetensors"
    from safetensors.torch import save_file

    save_file({"generator." + k: v for k, v in tensors.items()}, str(save_file_plain))
    assert torch.equal(load_generator(save_file_plain)(X), y)
    # ... and a changed Fourier-unit weight changes the output
    tensors["model.5.conv1.ffc.convg2g.fu.conv_layer.weight"] = tensors[
        "model.5.conv1.ffc.convg2g.fu.conv_layer.weight"] * -3
    save_generator(tensors, TINY, tmp_path / "changed.safetensors")
    assert not torch.allclose(load_generator(tmp_path / "changed.safetensors")(X), y)


def test_inpaint_pads_odd_sizes_and_keeps_the_size(tiny):
    _, model = tiny
    rng = np.random.default_rng(0)
    for h, w in ((45, 70), (9, 13), (1, 1)):
        rgb = rng.random((h, w, 3), dtype=np.float32)
        hole = np.zeros((h, w), bool)
        hole[h // 3: h // 3 + 1 + h // 3, w // 3: w // 3 + 1 + w // 3] = True
        out = inpaint(model, rgb, hole)
        assert out.shape == (h, w, 3) and out.dtype == np.float32


def test_loader_refuses_pickles_and_foreign_files(tmp_path):
    pt = tmp_path / "big-lama.pt"
    pt.write_bytes(b"x")
    with pytest.raises(UnsafeModelFile):
        load_generator(pt)
    from safetensors.torch import save_file

    save_file({"unet.conv_in.weight": torch.zeros(3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ModelNotFound) as e:
        load_generator(tmp_path / "other.safetensors")
    assert "big-lama" in str(e.value)
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ModelNotFound) as e2:
        load_generator(tmp_path / "broken.safetensors")
    for refusal in (e.value, e2.value):     # our words, not the library's (they go to the log only)
        text = str(refusal)
        assert "download the LaMa weights again" in text
        assert not re.search(r"Error|Exception|header|deserializ|Missing key|Unexpected key|size mismatch", text), text


# ----------------------------------------------------------------------------- converter


@pytest.fixture
def fake_lightning(monkeypatch):
    """Importable stand-ins for the training libraries a Lightning checkpoint names, only while saving.

    ``pytorch_lightning.utilities.log_and_run`` writes the marker named in its argument when called:
    a checkpoint that calls it would run code through an allowed-looking name."""
    pl = types.ModuleType("pytorch_lightning")
    cb = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")
    ut = types.ModuleType("pytorch_lightning.utilities")

    class ModelCheckpoint:
        def __init__(self):
            self.monitor = "val_ssim"

    def log_and_run(path):
        with open(path, "w") as f:
            f.write("ran")

    oc = types.ModuleType("omegaconf.dictconfig")

    class DictConfig:  # OmegaConf keeps a node's Python type (here the builtin dict) in its metadata
        def __init__(self, content):
            self._content, self._object_type = content, dict

    ModelCheckpoint.__module__, ModelCheckpoint.__qualname__ = cb.__name__, "ModelCheckpoint"
    log_and_run.__module__, log_and_run.__qualname__ = ut.__name__, "log_and_run"
    DictConfig.__module__, DictConfig.__qualname__ = oc.__name__, "DictConfig"
    cb.ModelCheckpoint, ut.log_and_run, oc.DictConfig = ModelCheckpoint, log_and_run, DictConfig
    for m in (pl, cb, ut, oc):
        monkeypatch.setitem(sys.modules, m.__name__, m)
    for parent in ("pytorch_lightning.callbacks", "omegaconf"):
        monkeypatch.setitem(sys.modules, parent, types.ModuleType(parent))
    return types.SimpleNamespace(ModelCheckpoint=ModelCheckpoint, log_and_run=log_and_run, DictConfig=DictConfig)


def lightning_checkpoint(model, path, extra=None):
    """A checkpoint shaped like big-lama's best.ckpt: Lightning metadata, generator and discriminator."""
    state = {"generator." + k: v for k, v in model.state_dict().items()}
    state["discriminator.model0.0.weight"] = torch.zeros(64, 3, 4, 4)
    state["loss_resnet_pl.impl.conv1.weight"] = torch.zeros(8, 3, 3, 3)
    ckpt = {"epoch": 39, "global_step": 1000, "pytorch-lightning_version": "1.2.9", "state_dict": state,
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.001}]}], **(extra or {})}
    torch.save(ckpt, path)
    return path


def test_converts_a_lightning_checkpoint_without_importing_lightning(tiny, tmp_path, fake_lightning, monkeypatch):
    _, model = tiny
    src = lightning_checkpoint(model, tmp_path / "best.ckpt",
                               {"callbacks": {fake_lightning.ModelCheckpoint: {"best_model_score": torch.tensor(0.9)}},
                                "hparams": fake_lightning.ModelCheckpoint(),
                                "hyper_parameters": fake_lightning.DictConfig({"generator": {"ngf": 64}})})
    for name in [m for m in sys.modules if m.startswith(("pytorch_lightning", "omegaconf"))]:
        monkeypatch.delitem(sys.modules, name)     # gone for the conversion: nothing may import them
    summary = conv.convert_with_summary(src, tmp_path / "out" / "big-lama.safetensors")
    assert not any(m.startswith(("pytorch_lightning", "omegaconf")) for m in sys.modules)
    assert summary["config"]["ngf"] == TINY.ngf and summary["tensors"] == len(model.state_dict())
    converted = load_generator(summary["path"])
    assert torch.equal(converted(X), model(X))
    tensors, meta = read_safetensors(summary["path"])
    assert meta["source"] == "best.ckpt" and not any("discriminator" in k for k in tensors)


def test_converts_a_torchscript_export(tiny, tmp_path):
    """IOPaint's big-lama.pt is lama's bin/to_jit.py output: a traced wrapper (model.generator.model...)."""
    _, model = tiny

    class Training(torch.nn.Module):
        def __init__(self, generator):
            super().__init__()
            self.generator = generator

        def forward(self, x):
            return self.generator(x)

    class JITWrapper(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.model = inner

        def forward(self, x):
            return self.model(x)

    traced = torch.jit.trace(JITWrapper(Training(model)), (X,), strict=False, check_trace=False)
    traced.save(str(tmp_path / "big-lama.pt"))
    out = conv.convert_lama_checkpoint(tmp_path / "big-lama.pt", tmp_path / "big-lama.safetensors")
    assert out == tmp_path / "big-lama.safetensors"
    assert torch.equal(load_generator(out)(X), model(X))


class RunsCode:
    """Unpickling this calls ``exec`` with code that writes a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.exec, (f"open({self.marker!r}, 'w').write('pwned')",))


class RunsShell:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_converter_refuses_a_malicious_pickle(tiny, tmp_path):
    _, model = tiny
    marker = tmp_path / "marker"
    evil = tmp_path / "big-lama.ckpt"
    torch.save({"state_dict": {"generator." + k: v for k, v in model.state_dict().items()},
                "hparams": RunsCode(marker)}, evil)
    # The file really is malicious: a plain load runs its code.
    torch.load(evil, weights_only=False)
    assert marker.read_text() == "pwned"
    marker.unlink()

    with pytest.raises(conv.UnsafeCheckpoint) as e:
        conv.convert_lama_checkpoint(evil, tmp_path / "out.safetensors")
    assert "exec" in str(e.value) and "Refused" in str(e.value)
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()

    shell = tmp_path / "shell.pt"
    torch.save({"x": RunsShell(marker)}, shell)
    legacy = tmp_path / "legacy.pt"
    torch.save({"x": RunsCode(marker)}, legacy, _use_new_zipfile_serialization=False)
    plain = tmp_path / "plain.pt"
    plain.write_bytes(pickle.dumps(RunsCode(marker), protocol=2))
    for path in (shell, legacy, plain):
        with pytest.raises(conv.UnsafeCheckpoint):
            conv.convert_lama_checkpoint(path, tmp_path / "out.safetensors")
        assert not marker.exists()


def test_allowed_looking_names_never_run(tiny, tmp_path, fake_lightning):
    """Even a function under a training library's name is only a stand-in: it is never called."""
    _, model = tiny
    marker = tmp_path / "marker"

    class CallsLightning:
        def __reduce__(self):
            return (fake_lightning.log_and_run, (str(marker),))

    src = lightning_checkpoint(model, tmp_path / "best.ckpt", {"hook": CallsLightning()})
    torch.load(src, weights_only=False)                           # the module is importable: it would run
    assert marker.exists()
    marker.unlink()
    out = conv.convert_lama_checkpoint(src, tmp_path / "out.safetensors")
    assert not marker.exists()
    assert torch.equal(load_generator(out)(X), model(X))


def test_malicious_torchscript_archive_is_refused(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "big-lama.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("big-lama/data.pkl", pickle.dumps(RunsCode(marker), protocol=2))
        z.writestr("big-lama/constants.pkl", pickle.dumps((), protocol=2))
        z.writestr("big-lama/code/__torch__.py", "")
    with pytest.raises(conv.UnsafeCheckpoint):
        conv.convert_lama_checkpoint(path, tmp_path / "out.safetensors")
    assert not marker.exists()


def test_converter_refuses_what_is_not_big_lama(tmp_path):
    torch.save({"state_dict": {"unet.weight": torch.zeros(2)}}, tmp_path / "other.ckpt")
    with pytest.raises(conv.ConversionError) as e:
        conv.convert_lama_checkpoint(tmp_path / "other.ckpt", tmp_path / "o.safetensors")
    assert "no LaMa generator" in str(e.value)
    with torch.device("meta"):
        sd = LamaGenerator(TINY).state_dict()
    sd = {k: torch.zeros(v.shape) for k, v in sd.items()}
    del sd["model.6.conv2.ffc.convg2g.fu.conv_layer.weight"]
    torch.save(sd, tmp_path / "partial.pth")
    with pytest.raises(conv.ConversionError) as e:
        conv.convert_lama_checkpoint(tmp_path / "partial.pth", tmp_path / "o.safetensors")
    assert "1 missing" in str(e.value) and "fu.conv_layer" in str(e.value)
    with pytest.raises(conv.ConversionError):
        conv.convert_lama_checkpoint(tmp_path / "nope.ckpt", tmp_path / "o.safetensors")


def test_python_m_core_lama_convert(tiny, tmp_path, capsys):
    from core.lama.__main__ import main

    _, model = tiny
    torch.save({"generator." + k: v for k, v in model.state_dict().items()}, tmp_path / "g.pth")
    assert main(["convert", str(tmp_path / "g.pth"), str(tmp_path / "g.safetensors")]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == str(tmp_path / "g.safetensors") and "parameters" in out.err
    (tmp_path / "evil.pt").write_bytes(pickle.dumps(RunsCode(tmp_path / "m"), protocol=2))
    assert main(["convert", str(tmp_path / "evil.pt"), str(tmp_path / "e.safetensors")]) == 3
    assert "Refused" in capsys.readouterr().err and not (tmp_path / "m").exists()
