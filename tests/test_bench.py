"""The benchmark itself never rots: ``python -m core.devtools.bench --quick --smoke`` runs every row on the tiny
models.  Nothing here looks at a timing: goals and verdicts belong to the benchmark's own output."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from core.devtools.bench import report
from core.devtools.bench.common import Row

from .engine_helpers import ROOT


@pytest.fixture(scope="module")
def smoke(tiny_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    docs = out / "benchmarks.md"
    docs.write_text("# Benchmarks\n\n<!-- fill-eval:start -->\nsomeone else's section\n<!-- fill-eval:end -->\n")
    r = subprocess.run([sys.executable, "-m", "core.devtools.bench", "--quick", "--smoke", "--models", str(tiny_root),
                        "--docs", str(docs), "--json", str(out / "bench.json")],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    return r, docs, out / "bench.json"


def test_smoke_run_measures_every_row(smoke):
    r, _docs, js = smoke
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads(js.read_text())
    rows = {row["row"]: row for row in data["rows"]}
    assert sorted(rows) == list(range(1, 13))
    for row in rows.values():
        assert row["verdict"] in ("PASS", "FAIL"), row
        assert not row["measured"].startswith("error"), row
    assert data["profile"]["name"] == "smoke"
    m = data["machine"]
    assert m["cores"] >= 1 and m["ram_gib"] > 0 and m["versions"]["torch"]
    assert len(data["load_average"]["start"]) == 3 and len(data["load_average"]["end"]) == 3
    # The figures behind the verdicts are there.
    assert rows[1]["figures"]["gflop_guided_step"] > rows[1]["figures"]["gflop_unguided_step"] > 0
    rates = rows[1]["figures"]["matmul_rates"]["bfloat16"]                # the floor: best of rates between steps
    assert rates["n"] >= 4 and rates["max"] == max(rates["all"]) >= rates["median"] >= rates["min"] > 0
    assert rows[1]["figures"]["matmul_gflops_bf16"] == rates["max"]
    assert "median" in " ".join(rows[1]["notes"])
    shares = rows[1]["figures"]["time_shares"]                         # where the step's time goes
    assert "convolution" in shares and abs(sum(shares.values()) - 1.0) < 1e-6
    assert rows[2]["figures"]["ours"]["unet_calls"] == data["profile"]["e2e_steps"]
    felt = rows[2]["figures"]["default_settings"]                       # the speed an artist feels
    assert (felt["ours_steps"], felt["stock_steps"], felt["stock_calls"]) == (25, 50, 51) and felt["projected"]
    assert rows[2]["figures"]["ours_repeat"]["vae_encodes"] == 0        # the VAE-encode cache hit
    assert rows[2]["figures"]["ours_repeat"]["text_encoding_s"] == 0.0  # the prompt cache hit
    assert rows[3]["figures"]["same_model_inputs_for_every_canvas"] is True
    timed = {side: len(v["all_s"]) for side, v in rows[3]["figures"]["canvases"].items()}
    assert timed == {"128": 2, "512": 1, "1024": 2}                    # the goal's two canvases every round
    assert rows[11]["figures"]["gflop_controlnet"] > 0 and rows[11]["figures"]["step_with_control_s"] > 0
    assert rows[6]["figures"]["together"]["shared"]["depth"]             # depth reused shared components
    expand, inpaint = rows[9]["figures"]["expand"], rows[9]["figures"]["inpaint"]   # both jobs ran, both rounds
    assert len(expand["all_s"]) == len(inpaint["all_s"]) == 2 and rows[9]["figures"]["ratio"] > 0
    assert expand["passes"] >= 1 and expand["unet_calls"] > 0 and inpaint["unet_calls"] > 0
    live = rows[10]["figures"]["frames"]                                  # a Live frame, split, both ways
    assert sorted(live) == ["128", "96"]
    for side, by_vae in live.items():
        assert sorted(by_vae) == ["full", "tiny"]
        for frame in by_vae.values():
            assert frame["model_size"] == [int(side), int(side)]
            assert frame["total_s"] >= frame["encode_s"] + frame["unet_s"] + frame["decode_s"] + frame["transfer_s"] > 0
    for key in ("bf16", "guidance1", "channels_last", "prompt_cache", "vae_cache", "strength1_skip", "x4_tile", "region_only",
                "memory", "pixels"):
        assert key in data["policy"], key


def test_smoke_run_writes_its_own_section_and_keeps_the_others(smoke):
    r, docs, _js = smoke
    text = docs.read_text()
    assert "someone else's section" in text and "<!-- fill-eval:end -->" in text
    assert text.count(report.START) == 1 and text.count(report.END) == 1
    section = text[text.index(report.START):text.index(report.END)]
    for n in range(1, 11):
        assert f"\n| {n} | " in section
    assert "Load average" in section and "Machine:" in section
    assert "| optimisation | measured |" in section
    assert section.split(report.START)[1].strip() in r.stdout   # the same table was printed


def test_a_second_write_replaces_the_section(tmp_path):
    path = tmp_path / "b.md"
    path.write_text("# Benchmarks\n\nintro\n")
    report.write_section(path, "first\n")
    report.write_section(path, "second\n")
    text = path.read_text()
    assert "intro" in text and "second" in text and "first" not in text
    assert text.count(report.START) == 1


@pytest.mark.parametrize("limit", [0, 30, 200])
def test_the_report_files_on_a_full_disk_stay_as_they_were(tmp_path, monkeypatch, limit):
    """Both report files go through the atomic writer: a disk that fills up leaves the old file whole."""
    from core.contract.atomic import WriteError

    from .helpers import disk_full_after, leftovers

    md, js = tmp_path / "b.md", tmp_path / "b.json"
    md.write_text("# Benchmarks\n\nsomeone else's section\n")
    js.write_text("{}\n")
    disk_full_after(monkeypatch, limit)
    with pytest.raises(WriteError, match=f"cannot write {md}: No space left on device"):
        report.write_section(md, "x" * 500)
    with pytest.raises(WriteError, match=f"cannot write {js}: No space left on device"):
        report.write_json(js, {"rows": ["y" * 500]})
    assert md.read_text() == "# Benchmarks\n\nsomeone else's section\n" and js.read_text() == "{}\n"
    assert not leftovers(tmp_path)


def test_an_unwritable_report_is_refused_before_the_run(tmp_path):
    (tmp_path / "file").write_text("x")
    r = subprocess.run([sys.executable, "-m", "core.devtools.bench", "--quick", "--smoke", "--rows", "5", "--docs",
                        str(tmp_path / "file" / "b.md")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines() == [f"python -m core.devtools.bench: error: cannot write {tmp_path / 'file' / 'b.md'}: "
                                     f"{tmp_path / 'file'} is not a folder"]


def test_smoke_goes_with_quick():
    r = subprocess.run([sys.executable, "-m", "core.devtools.bench", "--smoke"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "--quick" in r.stderr


def test_table_lists_each_row_with_goal_and_verdict():
    rows = [Row(2, "two", "x", "≥ 2×", False), Row(1, "one", "y", "≤ 1.25×", True)]
    table = report.main_table(rows)
    lines = table.splitlines()
    assert lines[2].startswith("| 1 | one | y | ≤ 1.25× | **PASS** |")
    assert lines[3].startswith("| 2 | two | x | ≥ 2× | **FAIL** |")


def test_quick_times_the_compiled_step_only_when_asked():
    """--quick stays within its 15 minutes by leaving the compiled UNet (minutes of compiling) to
    --compile and the full run."""
    from core.devtools.bench.cli import build_parser
    from core.devtools.bench.profiles import FULL, QUICK, SMOKE

    assert FULL.compiled_step and not QUICK.compiled_step and not SMOKE.compiled_step
    assert build_parser().parse_args(["--quick", "--compile"]).compile


def test_canvas_rounds_time_the_goals_canvases_every_round_in_alternating_order():
    from core.devtools.bench.canvas import canvas_rounds

    assert canvas_rounds((512, 2048, 8192), 1) == [(512, 2048, 8192)]
    assert canvas_rounds((512, 2048, 8192), 4) == [(512, 2048, 8192), (8192, 512), (512, 8192), (8192, 512)]
