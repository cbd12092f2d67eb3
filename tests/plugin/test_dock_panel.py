"""The dock panel without an engine process: the stall meter, the engine status line (starting, ready
with its device, a model loading, stopped with its reason, restarting), the missing-model hint made
from the engine's real scan of an empty models folder (and the start in Fill it leads to), the seed
controls and the widgets' ranges."""

from __future__ import annotations

import time

import numpy as np
import pytest

from core.contract.events import Capabilities, EngineStatus, ModelStatus
from core.contract.params import RANGES
from plugin.diffusion_dock import host as H
from plugin.diffusion_dock.panel.dock import DockPanel
from plugin.diffusion_dock.runtime.qt import Qt, QTimer
from plugin.diffusion_dock.runtime.stall import StallMeter
from plugin.diffusion_dock.session.dock_session import DockSession
from plugin.diffusion_dock.session.results_store import ResultStore
from plugin.diffusion_dock.session.settings import Settings

from .dock_util import spin_until
from .memory_host import MemoryDocument, MemoryHost

U8 = H.ColorInfo("RGBA", "U8", "sRGB-elle-V2-srgbtrc.icc")


@pytest.fixture
def session(qapp, tmp_path, monkeypatch):
    monkeypatch.setenv("DD_CONFIG_DIR", str(tmp_path / "config"))     # the form's settings are saved on Generate
    return DockSession(Settings(), ResultStore(tmp_path / "results"))


@pytest.fixture
def panel(qtbot, session):
    doc = MemoryDocument(64, 48, "panel")
    doc.add("Paint", np.zeros((48, 64, 4), np.uint8), U8)
    p = DockPanel(host=MemoryHost(doc), session=session)
    qtbot.addWidget(p)
    return p


class Watched:
    max_stall_ms = 0.0


def test_the_stall_meter_measures_a_blocked_event_loop(qapp):
    meter = StallMeter(interval_ms=10)
    job, idle = Watched(), Watched()
    meter.watch(job)
    assert meter.running
    QTimer.singleShot(60, lambda: time.sleep(0.15))        # a slot that blocks the loop for 150 ms
    end = time.monotonic() + 0.5
    spin_until(lambda: time.monotonic() > end, 5, "half a second")
    meter.unwatch(job)
    assert not meter.running                               # it only runs while jobs are followed
    assert 140 <= job.max_stall_ms < 1000, job.max_stall_ms
    assert meter.ticks > 5
    # A job watched later does not inherit the earlier stall.
    meter.watch(idle)
    meter.unwatch(idle)
    assert idle.max_stall_ms < 140


def caps(device="cpu", models=(), modes=("inpaint", "fill")):
    return Capabilities(1, "test", device, "bfloat16", "no GPU", tuple(models), modes)


def status_line(panel):
    return panel.engine_bar.label.text()


def test_engine_status_line(panel, session):
    assert status_line(panel) == "Engine: starts with the first job"
    session._on_status(EngineStatus("starting"))
    assert status_line(panel) == "Starting the engine…"
    session._on_status(EngineStatus("ready"))
    session._on_capabilities(caps())
    assert status_line(panel) == "Ready · cpu bfloat16"
    assert "no GPU" in panel.engine_bar.label.toolTip()
    session._on_model_status(ModelStatus("sd2-inpainting", "loading"))
    assert status_line(panel) == "Loading sd2-inpainting…"
    session._on_model_status(ModelStatus("sd2-inpainting", "loaded", seconds=1.0))
    assert status_line(panel) == "Ready · cpu bfloat16"
    # the UNet compiles by default while the engine is idle, pauses while jobs run, and says when it is done
    session._on_model_status(ModelStatus("sd2-inpainting", "compiling", message="[2, 9, 64, 64]"))
    assert status_line(panel) == "Ready · cpu bfloat16 · compiling…"
    assert "UNet of sd2-inpainting: compiling for [2, 9, 64, 64]" in panel.engine_bar.label.toolTip()
    session._on_model_status(ModelStatus("sd2-inpainting", "compile_paused", message="[2, 9, 64, 64]"))
    assert status_line(panel) == "Ready · cpu bfloat16 · compiling… (paused while jobs run)"
    assert "compiling paused while jobs run" in panel.engine_bar.label.toolTip()
    session._on_model_status(ModelStatus("sd2-inpainting", "compiled", message="[2, 9, 64, 64] in 190 s"))
    assert status_line(panel) == "Ready · cpu bfloat16 · compiled"
    assert panel.engine_bar.label.toolTip().endswith("\nUNet of sd2-inpainting: compiled for [2, 9, 64, 64] in 190 s")
    # the artist hears when it did not happen, and why (in the tooltip)
    skipped = "[2, 4, 96, 96]: the compiled copy needs about 1.85 GiB more memory than is free; runs eagerly"
    session._on_model_status(ModelStatus("sd2-depth", "compile_skipped", message=skipped))
    assert status_line(panel) == "Ready · cpu bfloat16 · UNet not compiled"
    assert f"UNet of sd2-depth: not compiled for {skipped}" in panel.engine_bar.label.toolTip()
    session._on_model_status(ModelStatus("sd2-depth", "compile_failed", message="[2, 4, 96, 96]: InductorError: …"))
    assert "UNet of sd2-depth: compiling failed for [2, 4, 96, 96]: InductorError" in panel.engine_bar.label.toolTip()
    session._on_model_status(ModelStatus("sd2-depth", "unloaded"))
    assert status_line(panel) == "Ready · cpu bfloat16 · compiled"
    session._on_model_status(ModelStatus("sd2-inpainting", "unloaded"))
    assert status_line(panel) == "Ready · cpu bfloat16"
    session._on_status(EngineStatus("restarting", "the engine stopped (exit code -9)", "engine_died"))
    assert status_line(panel) == "Restarting the engine: the engine stopped (exit code -9)"
    session._on_status(EngineStatus("dead", "python not found", "engine_start_failed"))
    assert status_line(panel) == "Engine stopped: python not found"
    assert panel.engine_bar.restart.isEnabled()


def test_a_cluster_gateway_shows_replicas_models_and_queue_place(panel, session):
    session._on_status(EngineStatus("ready"))
    session._on_capabilities(caps())
    session._on_cluster({"replicas": {"running": 2, "starting": 1}, "models": {"sd2-inpainting": 2, "sd2-depth": 1},
                         "queued": 7, "mine": {"running": 1, "queued": 2, "next": 3}, "artist": "ann",
                         "admin": False})
    assert status_line(panel) == "Ready · cpu bfloat16 · cluster of 2 GPU workers (+1 starting)"
    tip = panel.engine_bar.label.toolTip().splitlines()
    assert "Models loaded: sd2-depth ×1, sd2-inpainting ×2" in tip
    assert "Your jobs: 1 running, 2 queued (next at place 3 of 7); 7 waiting in all" in tip
    assert tip[-1] == "Signed in as ann"
    session._on_cluster({"replicas": {"running": 1, "starting": 0}, "models": {}, "queued": 0, "mine": {}})
    assert status_line(panel) == "Ready · cpu bfloat16 · cluster of 1 GPU worker"


def test_no_engine_to_start_is_reported_on_the_job(panel, session):
    session.settings.engine = "remote"                   # remote, but no URL set
    panel.set_mode("fill")
    panel.host.active.select(np.pad(np.full((10, 10), 255, np.uint8), ((5, 33), (5, 49))))
    item = panel.generate()
    assert item.state == "failed" and item.code == "engine_not_found"
    assert panel.last_message[0] == "error" and "no URL" in panel.last_message[1]
    assert status_line(panel).startswith("Engine stopped: remote engine: no URL")


def test_a_missing_model_shows_its_install_line_and_the_dock_starts_in_fill(panel, session, tmp_path, policy):
    from core.engine.service import EngineService
    from core.models.manager import ModelManager

    empty = EngineService(models=ModelManager(policy, models_dir=tmp_path / "none", hub_cache=tmp_path / "hub"),
                          warm_up=False).scan_capabilities()       # what the engine says with no model at all
    assert panel.mode == "inpaint" and not panel.model_hint.isVisible()
    session._on_status(EngineStatus("ready"))
    session._on_capabilities(empty)
    assert panel.mode == "fill"
    assert panel.last_message[0] == "info" and "Fill" in panel.last_message[1]
    hint = panel.model_hint.text()
    assert hint.count("\n") == 0 and "LaMa" in hint and "patches" in hint
    panel.set_mode("inpaint")
    hint = panel.model_hint.text()
    assert "\n" not in hint and "not installed" in hint
    assert "python -m installer models download sd2-inpainting" in hint
    panel.set_mode("upscale")
    assert "x4" in panel.model_hint.text().lower() and "installer models download" in panel.model_hint.text()


def test_a_dock_in_use_keeps_its_mode_when_models_are_missing(panel, session, tmp_path, policy):
    panel.set_mode("restyle")
    session._on_status(EngineStatus("ready"))
    session._on_capabilities(caps(models=({"key": "sd2-inpainting", "title": "SD2 inpainting", "found": False,
                                           "hint": "get it", "modes": ["inpaint"]},)))
    assert panel.mode == "restyle"


def test_seed_field_and_reuse_last_seed(qtbot, panel, session):
    assert panel.form.seed.text() == "" and panel.form.seed.placeholderText() == "random"
    assert panel.form.read_params().seed is None                     # empty = random
    qtbot.mouseClick(panel.form.reuse_seed, Qt.MouseButton.LeftButton)
    assert panel.form.seed.text() == "" and "No result yet" in panel.last_message[1]
    session.last_seed = 4242
    qtbot.mouseClick(panel.form.reuse_seed, Qt.MouseButton.LeftButton)
    assert panel.form.seed.text() == "4242" and panel.form.read_params().seed == 4242
    qtbot.keyClicks(panel.form.seed, "x-1")                          # digits only
    assert panel.form.seed.text() == "42421"


def test_every_input_takes_its_range_from_the_engine(panel):
    for name in ("num_images", "steps", "grow", "feather", "noise_level", "tile", "width", "height", "expand_left",
                 "expand_top", "expand_right", "expand_bottom"):
        box = panel.findChild(type(panel.form.steps), name) or getattr(panel.form, f"{name}_box", None)
        assert (box.minimum(), box.maximum()) == (RANGES[name].low, RANGES[name].high), name
    for name in ("guidance", "strength"):
        box = getattr(panel.form, name)
        assert (box.minimum(), box.maximum()) == (RANGES[name].low, RANGES[name].high), name
    panel.form.width_box.setValue(101)
    panel.form.width_box.editingFinished.emit()
    assert panel.form.width_box.value() == 96                        # multiples of 8


@pytest.mark.parametrize("mode,shown,hidden", [
    ("inpaint", ["prompt", "grow", "feather", "masked_content", "strength"], ["noise_level", "depth_source", "size"]),
    ("restyle", ["prompt", "depth_source", "strength"], ["noise_level", "size", "backend"]),
    ("depth", [], ["prompt", "steps", "seed", "noise_level"]),
    ("upscale", ["prompt", "noise_level", "tile"], ["strength", "depth_source", "size"]),
    ("generate", ["prompt", "size", "image_to_image"], ["strength", "depth_source", "noise_level"]),
    ("fill", ["backend", "grow", "feather"], ["prompt", "steps", "seed", "guidance"]),
    ("expand", ["prompt", "expand", "strength", "color_match"], ["grow", "feather", "masked_content", "size", "backend"]),
])
def test_each_mode_shows_its_own_inputs(panel, mode, shown, hidden):
    panel.set_mode(mode)
    panel.show()

    def visible(key):
        if key == "prompt":
            return panel.form.prompt_box.isVisibleTo(panel)
        return panel.form.rows[key][1].isVisibleTo(panel)

    assert [k for k in shown if not visible(k)] == []
    assert [k for k in hidden if visible(k)] == []
    assert panel.form.mode_box.currentData() == mode


def test_engine_settings_carry_device_and_compile_to_the_engine_command(qtbot, session, tmp_path):
    """The settings dialog's Device and "Compile the UNet" reach the local engine's command line, and
    survive a save and load.  Compiling is on unless turned off (the engine's default: no flag)."""
    import json

    from plugin.diffusion_dock.panel.widgets import EngineSettingsDialog

    dialog = EngineSettingsDialog(Settings())
    qtbot.addWidget(dialog)
    assert dialog.compile.isChecked()
    dialog.device.setCurrentIndex(dialog.device.findData("cpu"))
    dialog.compile.setChecked(False)
    chosen = dialog.settings()
    assert (chosen.device, chosen.compile_unet) == ("cpu", False)
    chosen.save(tmp_path / "dock.json")
    loaded = Settings.load(tmp_path / "dock.json")
    assert loaded.compile_unet is False
    assert not EngineSettingsDialog(loaded).compile.isChecked()
    session.settings = loaded
    client = session._make_client()
    assert list(client.options.engine_args) == ["--device", "cpu", "--no-compile"]
    session.settings.compile_unet = True
    assert list(session._make_client().options.engine_args) == ["--device", "cpu"]
    # a settings file of the dock before compiling became the default holds "compile": false, the old
    # default: it does not turn compiling off
    (tmp_path / "old.json").write_text(json.dumps({"engine": "local", "compile": False}))
    assert Settings.load(tmp_path / "old.json").compile_unet is True


def test_the_sampler_is_chosen_in_the_form_and_kept_per_mode(panel):
    """The Sampler row of the modes that denoise: Auto (the model's catalogue default) first, then every
    sampler; the choice goes into the request's options, and each mode keeps its own."""
    from core.contract import samplers

    form = panel.form
    box = form.sampler
    assert [box.itemData(i) for i in range(box.count())] == list(samplers.SAMPLER_CHOICES)
    assert box.itemText(0) == "Auto (DPM++ 2M, 25 steps)" and box.currentData() == "auto"
    panel.show()
    for mode in ("inpaint", "restyle", "generate", "expand"):
        panel.set_mode(mode)
        assert form.rows["sampler"][1].isVisibleTo(panel), mode
    for mode in ("upscale", "depth", "fill"):
        panel.set_mode(mode)
        assert not form.rows["sampler"][1].isVisibleTo(panel), mode
    panel.set_mode("inpaint")
    box.setCurrentIndex(box.findData("euler_a"))
    assert form.spec().options.sampler == "euler_a"
    panel.set_mode("generate")
    assert box.currentData() == "auto"                       # generate has its own
    panel.set_mode("inpaint")
    assert box.currentData() == "euler_a"
    form.load_spec("restyle", {"steps": 30}, {"sampler": "unipc"})   # a provenance record re-loaded
    assert form.mode == "restyle" and box.currentData() == "unipc" and form.steps.value() == 30
    assert form.saved_options()["inpaint"]["sampler"] == "euler_a"
