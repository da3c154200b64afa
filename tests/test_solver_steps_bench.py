"""benchmarks/solver_steps.py: how a setting becomes method arguments, and the paired table."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.solver_steps import Setting, table  # noqa: E402


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
