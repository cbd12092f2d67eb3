"""The plugin in the full Krita under Xvfb, installed by the real installer into a fresh HOME: it loads,
registers its docker, actions (Tools menu, shortcuts from the .action file) and Layers-docker menu
entries; actions reach the dock; a result layer is undone and redone in one step with Krita's own
undo; and a real tiny-model inpaint runs through the dock and the engine process, from the action and
Ctrl+Enter to a new layer with the expected pixels, which one undo removes."""

from __future__ import annotations

import numpy as np
import pytest

from core.contract.jobs import JobRequest
from core.pipelines import run_job

from .krita_gui import run_gui_scenario

pytestmark = pytest.mark.krita(gui=True)

W, H = 64, 48
SEL = (20, 12, 22, 18)   # x, y, w, h of the driver's selection


@pytest.fixture(scope="module")
def gui(tmp_path_factory, tiny_root):
    results, out_dir, proc = run_gui_scenario(tmp_path_factory.mktemp("krita-gui-home"), models_dir=tiny_root,
                                              timeout=600)   # with Live's frames, on a busy machine
    assert "crash" not in results, results["crash"] + "\n" + proc.stderr[-3000:]
    assert not results.get("timeout"), results
    return results, out_dir


@pytest.fixture(scope="module")
def gui_run(gui):
    return gui[0]


def pattern(w, h):
    """The driver's document pixels (BGRA U8), the same formula."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x * 7 + y * 3) % 256, (x * 2 + y * 11) % 256, (x * y) % 256, np.full_like(x, 255)],
                    axis=-1).astype(np.uint8)


def test_plugin_loads_with_krita_binding_and_no_generic_modules(gui_run):
    assert gui_run["plugin_loaded"] and gui_run["registered"]
    assert gui_run["binding"] == "PyQt5"
    assert gui_run["generic_modules"] == []


def test_docker_exists(gui_run):
    assert "diffusion_dock" in gui_run["dockers"]
    assert gui_run["dock_found"] and gui_run["dock_panel"] == "DockPanel"
    assert gui_run["engine_device"] == "cpu" and gui_run["engine_text"].startswith("Ready")


def test_shortcuts_from_action_file_are_registered(gui_run):
    from plugin.diffusion_dock.panel.actions import ACTIONS

    for spec in ACTIONS:
        got = gui_run["actions"][spec.id]
        assert got is not None, spec.id
        assert got["text"] == spec.text
        assert got["shortcut"] == spec.shortcut, spec.id
    assert "Diffusion Dock" in gui_run["tools_entries"]            # Tools › Diffusion Dock › ...
    assert gui_run["tools_submenu"] == [a.id for a in ACTIONS]


def test_actions_are_enabled_on_a_paint_layer(gui_run):
    # Krita reads the .action file's activation flags: without a document only "show" is active.
    before = gui_run["enabled_without_doc"]
    assert before["diffusion_dock_show"] is True
    assert not any(v for k, v in before.items() if k != "diffusion_dock_show"), before
    assert gui_run["active_layer"] == "Background"
    assert all(gui_run["enabled_with_layer"].values()), gui_run["enabled_with_layer"]


def test_actions_show_the_dock_and_set_its_mode(gui_run):
    assert gui_run["show_makes_visible"] is True
    assert gui_run["after_restyle"] == {"history": [["restyle", "menu"]], "mode": "restyle"}


def test_layer_menu_gets_entries_and_other_menus_do_not(gui_run):
    from plugin.diffusion_dock.panel.actions import LAYER_MENU

    assert gui_run["layer_view_found"]
    hook = gui_run["hook"]
    assert hook["failed"] is None and hook["installed"]
    menu = gui_run["layer_menu"]
    assert menu is not None and len(menu) > len(LAYER_MENU)       # Krita's own entries, then ours
    assert menu[-len(LAYER_MENU):] == [a.text for a in LAYER_MENU]
    assert hook["menus_extended"] == 1
    assert gui_run["other_menu"] == ["only entry"]


def test_result_layer_undo_and_redo_in_one_step(gui_run):
    assert gui_run["host_active_layer"] == "Background"
    assert gui_run["with_preview"] == ["[Preview] preview", "Background"]
    assert gui_run["after_apply"] == ["[Fill] Patches", "Background"]
    assert gui_run["after_undo"] == ["Background"]
    assert gui_run["after_redo"] == ["[Fill] Patches", "Background"]
    assert gui_run["provenance_after_redo"]["seed"] == 7


def test_expand_undo_in_krita_takes_two_steps_layer_then_canvas(gui_run):
    """Krita 5's scripting API has no undo macro: the canvas resize ("Resize Image") and the result layer
    are two undo steps.  The first Ctrl+Z removes the layer (the canvas stays grown), the second restores
    the old size with the old pixels back at their place; redo does both again."""
    check_expand_undo(gui_run)


def check_expand_undo(gui_run):
    """The expand undo scenario's observations (real Krita's test driver, the fake's scenario)."""
    grown, old = [96, 48], [64, 48]
    layers = ["[Fill] OpenCV", "[Expand] more (seed 5)", "Background"]
    assert gui_run["expand_applied"] == {"size": grown, "layers": layers, "corner_at_8": True, "corner_at_0": False}
    after = gui_run["expand_undo_redo"]
    without = [layers[0], layers[2]]
    assert after[0] == {"size": grown, "layers": without, "corner_at_8": True, "corner_at_0": False}
    assert after[1] == {"size": old, "layers": without, "corner_at_8": False, "corner_at_0": True}
    assert after[2] == after[0] and after[3] == gui_run["expand_applied"]


def test_an_action_runs_a_tiny_model_inpaint_through_the_dock(gui, models):
    res, out = gui
    assert res["after_inpaint_action"] == {"mode": "inpaint", "prompt_focus": True}
    assert res["ctrl_enter_submitted"]
    assert res["job"]["state"] == "done", res["job"]
    assert res["result"]["stored"] and res["result"]["name"] == "[Inpaint] red scarf (seed 1234)"
    assert res["preview_layers"] == ["[Preview] [Inpaint] red scarf (seed 1234)", "Background"]
    assert res["preview_locked"] == [True]
    assert res["browse_layers"] == ["[Preview] [Inpaint] red scarf (seed 1235)", "Background"]
    assert res["back_layers"] == res["preview_layers"]
    [first], *others = res["preview_node_ids"]           # one preview layer, reused while browsing
    assert others == [[first], [first]]
    assert res["after_job_apply"] == ["[Inpaint] red scarf (seed 1234)", "Background"]
    assert res["stored_state"] == "applied"
    prov = res["provenance"]
    assert prov["seed"] == 1234 and prov["mode"] == "inpaint" and prov["params"]["prompt"] == "red scarf"
    # The request the dock sent holds exactly the layer's pixels and the selection over its region.
    image, mask = (out / "request_image.raw").read_bytes(), (out / "request_mask.raw").read_bytes()
    req = JobRequest.from_dict(res["request"], {"image": image, "mask": mask})
    rx, ry = req.origin
    src = pattern(W, H)
    assert image == src[ry:ry + req.image.height, rx:rx + req.image.width].tobytes()
    # The new layer holds what the same request gives in this process, at the patch's offset.
    patch = run_job(req, models).patches[0]
    layer = np.frombuffer((out / "new_layer.raw").read_bytes(), np.uint8).reshape(H, W, 4)
    expected = np.zeros((H, W, 4), np.uint8)
    p = np.frombuffer(patch.image.data, np.uint8).reshape(patch.image.height, patch.image.width, 4)
    expected[patch.y:patch.y + p.shape[0], patch.x:patch.x + p.shape[1]] = p
    assert np.array_equal(layer, expected)
    x, y, w, h = SEL
    inside = np.zeros((H, W), bool)
    inside[y:y + h, x:x + w] = True
    assert layer[inside, 3].any() and not layer[~inside].any()
    # Everything outside the selection is unchanged; the source layer is untouched.
    before = np.frombuffer((out / "projection_before.raw").read_bytes(), np.uint8).reshape(H, W, 4)
    after = np.frombuffer((out / "projection_after.raw").read_bytes(), np.uint8).reshape(H, W, 4)
    assert np.array_equal(before[~inside], after[~inside]) and not np.array_equal(before, after)
    assert (out / "source_after.raw").read_bytes() == src.tobytes()
    # One undo removes the layer.
    assert res["after_job_undo"] == ["Background"]
    # The preview left nothing in the undo history: it became the layer itself.
    assert not any(name.startswith("[Preview]") for name in res["after_second_undo"]), res["after_second_undo"]
    # The stall meter ran inside Krita while the job was followed.
    assert res["job"]["max_stall_ms"] > 0
    print(f"\nKrita: largest event-loop stall during the tiny inpaint {res['job']['max_stall_ms']:.1f} ms, "
          f"idle {res['idle_stall_ms']:.1f} ms; reading the layer took {res['job']['prepare_ms']:.1f} ms")


def test_live_repaints_after_each_edit_in_one_preview_layer(gui_run):
    live = gui_run["live"]
    assert live["bar_visible"]
    frames = live["frames"]
    assert [f["what"] for f in frames] == ["first", "edit 0", "edit 1", "edit 2", "selection"]
    seqs = [f["seq"] for f in frames]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)          # always a newer frame
    for f in frames:
        assert f["mode"] == "live" and f["request_is_layer"] and f["shown_is_patch"], f
        assert len(f["preview_ids"]) == 1 and f["layers"][-1] == "Background", f
        assert f["active"] == "Background", f          # Krita activates the inserted preview: not for long
    assert len({f["preview_ids"][0] for f in frames[:4]}) == 1            # the preview layer is reused
    assert frames[-1]["has_mask"] and not frames[0]["has_mask"]
    # Off: no layer left.  Apply: the frame becomes the layer, one undo removes it.
    assert live["off_layers"] == ["Background"] and not live["off_active"]
    assert live["applied_layers"][0].startswith("[Live] a glass vase (seed ") and not live["applied_active"]
    assert live["applied_stored"] == ["applied"]
    assert live["after_apply_undo"] == ["Background"]
    print(f"\nKrita Live: undo action before '{live['undo_text_before']}', during Live '{live['undo_text_live']}', "
          f"after Live off '{live['undo_text_off']}'")
