"""The fill evaluation script: real numbers on small images, and a section-preserving markdown writer."""

import numpy as np

from core.devtools import fill_eval


def test_evaluation_ranks_opencv_above_the_mean_fill():
    report = fill_eval.evaluate(size=96, per_kind=1, seed=1)
    res = report["results"]
    assert report["count"] == len(fill_eval.KINDS) * len(fill_eval.MASK_STYLES)
    mean = np.mean([p for *_, p in res["mean colour (baseline)"]["scores"]])
    telea = np.mean([p for *_, p in res["OpenCV Telea"]["scores"]])
    assert telea > mean + 5
    lama = next(k for k in res if k.startswith("LaMa"))
    assert "tiny random weights" in lama and not res[lama]["meaningful"]
    assert "Fill job, defaults (opencv)" in res
    md = fill_eval.markdown(report) + fill_eval.notes(report)
    assert md.count("\n| ") == len(res) + 1 and "random weights" in md


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
