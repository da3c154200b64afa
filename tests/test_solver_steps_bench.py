"""benchmarks/solver_steps.py: how a setting becomes method arguments, and the paired table."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.solver_steps import Setting, append_row, measured_rows, table  # noqa: E402


def test_settings_become_the_method_arguments():
    s = Setting.parse("unipc:12:0.1-0.8")
    assert (s.solver, s.steps, s.interval) == ("unipc", 12, (0.1, 0.8))
    args = s.method_args("distdiff")
    assert "--model.init_args.method.solver=unipc" in args
    assert "--model.init_args.method.guidance_interval=[0.1,0.8]" in args
    assert "--model.init_args.method.guidance_steps=5" in args  # M scaled with the steps: 20 of 50
    diffii = Setting.parse("ddim:8/12").method_args("diffii")
    assert "--model.init_args.method.inversion_steps=8" in diffii
    assert "--model.init_args.method.num_inference_steps=12" in diffii
    assert not any("solver" in a for a in diffii)  # Diff-II has DDIM only
    with pytest.raises(ValueError, match="Diff-II inverts and samples with DDIM"):
        Setting.parse("unipc:8").method_args("diffii")
    with pytest.raises(ValueError, match="solver:steps"):
        Setting.parse("unipc")


def test_table_pairs_each_setting_with_the_reference_and_chooses_the_cheapest_that_held():
    def row(setting, seed, faithfulness, unet=50):
        return {"method": "m", "setting": setting, "seed": seed, "unet_per_image": unet, "images_per_s": 2.0,
                "faithfulness": faithfulness, "diversity": 0.4, "frechet_distance": 0.1}  # fmt: skip

    rows = [row("ddim 25", 0, 0.80), row("ddim 25", 1, 0.90)]  # std 0.071
    rows += [row("unipc 12", 0, 0.70, 24), row("unipc 12", 1, 0.85, 24)]  # -0.075: within 2 stds
    rows += [row("ddim 12", 0, 0.80, 24), row("ddim 12", 1, 0.90, 24)]  # as good, as cheap: closer
    rows += [row("unipc 8", 0, 0.80, 16), row("unipc 8", 1, 0.90, 16)]  # cheaper, but below 12 steps
    rows += [row("unipc 4", 0, 0.60, 8), row("unipc 4", 1, 0.65, 8)]  # -0.225: beyond
    lines = table(rows).splitlines()
    reference = "| m | ddim 25 | 2 | 50 | 2.00 | 0.850 (std 0.071) | 0.400 (std 0.000) | 0.100 (std 0.000)"
    assert lines[2] == reference + " | reference |"
    assert (
        lines[3]
        == "| m | unipc 12 | 2 | 24 | 2.00 | 0.775 (-0.075) | 0.400 (+0.000) | 0.100 (+0.000) | yes |"
    )
    assert lines[4].startswith("| m | ddim 12 |") and lines[4].endswith("| yes, chosen |")
    assert lines[5].startswith("| m | unipc 8 |") and lines[5].endswith("| yes |")
    assert lines[6].startswith("| m | unipc 4 |") and lines[6].endswith("| no |")


def test_a_resumed_report_keeps_its_rows_and_names_a_line_that_is_not_one(tmp_path):
    settings = {"images_per_class": 25, "batch_size": 32}
    path = tmp_path / "rows.jsonl"
    first = {"method": "m", "setting": "ddim 25", "seed": 0, "faithfulness": 0.8} | settings
    append_row(path, first)
    with path.open("a") as fh:
        fh.write('{"method": "m", "setting": "ddim 25", "se')  # a crash in the middle of an append
    assert measured_rows(path, settings) == [first]  # the torn tail is left out
    second = first | {"seed": 1}
    append_row(path, second)  # cuts the torn tail first
    assert measured_rows(path, settings) == [first, second]
    legacy = {k: v for k, v in first.items() if k not in settings} | {"seed": 2}  # before rows kept them
    append_row(path, legacy)
    assert measured_rows(path, settings)[-1] == legacy
    with pytest.raises(
        ValueError, match="line 1 was measured with .*'images_per_class': 25.* another --report"
    ):
        measured_rows(path, settings | {"images_per_class": 5})
    with path.open("a") as fh:
        fh.write('{"method": "m"}\n[1]\n')
    with pytest.raises(ValueError, match="rows.jsonl line 4: lacks setting, seed; delete that line"):
        measured_rows(path, settings)
