"""The fill evaluation script: real numbers on small images, and a section-preserving markdown writer."""

import numpy as np

from core.devtools import fill_eval


def test_evaluation_ranks_the_fills_and_times_a_region():
    report = fill_eval.evaluate(size=96, per_kind=1, seed=1, region=64)
    res = report["results"]
    assert report["count"] == len(fill_eval.KINDS) * len(fill_eval.MASK_STYLES)
    mean = np.mean([p for *_, p in res["mean colour (baseline)"]["scores"]])
    telea = np.mean([p for *_, p in res[fill_eval.TELEA]["scores"]])
    patch = np.mean([p for *_, p in res[fill_eval.PATCH]["scores"]])
    assert telea > mean + 5 and patch > telea
    lama = next(k for k in res if k.startswith("LaMa"))
    assert "tiny random weights" in lama and not res[lama]["meaningful"]
    assert "Fill job, defaults (patch)" in res                # the job without LaMa takes the patch fill
    assert res[fill_eval.PATCH]["region_s"] > 0 and res[lama]["region_s"] is None
    md = fill_eval.markdown(report) + fill_eval.notes(report)
    assert md.count("\n| ") == len(res) + 1 and "random weights" in md and "region s |" in md
    table = fill_eval.per_image(report)
    assert table.count("\n| ") == report["count"] + 1 and "texture 1, box mask" in table


def _report(rows: dict) -> dict:
    """A report with given (texture, shapes) PSNR and region seconds per label."""
    results = {label: {"scores": [("texture", "box", t), ("shapes", "box", s)], "region_s": sec}
               for label, (t, s, sec) in rows.items()}
    return {"results": results, "region": 512}


def test_choose_takes_the_best_texture_and_shapes_fill_within_the_time_goal():
    rows = {fill_eval.TELEA: (29.0, 24.0, 0.2), fill_eval.PATCH: (36.0, 28.0, 1.5),
            "patches everywhere": (37.0, 22.0, 1.9), "OpenCV contrib xphoto shift-map": (40.0, 30.0, 9.0)}
    winner, lines = fill_eval.choose(_report(rows))
    assert winner == fill_eval.PATCH                            # shift-map is better but too slow
    assert any(fill_eval.PATCH in x and "+7.0 dB" in x and "+4.0 dB" in x and "meets" in x for x in lines)
    assert any("patches everywhere" in x and "misses" in x for x in lines)    # shapes below Telea
    assert any("shift-map" in x and "misses" in x for x in lines)
    rows[fill_eval.PATCH] = (30.0, 24.5, 1.0)
    assert fill_eval.choose(_report(rows))[0] == "patches everywhere"   # the best mean within 2 s, even if short of the goal


def test_procedural_images_are_seeded():
    for kind in fill_eval.KINDS:
        a = fill_eval.procedural_image(kind, 3, 64)
        assert a.shape == (64, 64, 3) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
        assert np.array_equal(a, fill_eval.procedural_image(kind, 3, 64))
        assert not np.array_equal(a, fill_eval.procedural_image(kind, 4, 64))


def test_write_section_keeps_other_sections(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Inpaint timings\n\n| a |\n")
    fill_eval.write_section(doc, "table one\n", "python -m core.devtools.fill_eval")
    fill_eval.write_section(doc, "table two\n", "python -m core.devtools.fill_eval")
    text = doc.read_text()
    assert "## Inpaint timings" in text and "table two" in text and "table one" not in text
    assert text.count(fill_eval.SECTION_START) == 1
