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


def test_table_pairs_each_setting_with_the_reference_on_the_same_seeds():
    def row(setting, seed, faithfulness):
        return {"method": "m", "setting": setting, "seed": seed, "unet_per_image": 50, "images_per_s": 2.0,
                "faithfulness": faithfulness, "diversity": 0.4, "frechet_distance": 0.1}  # fmt: skip

    rows = [row("ddim 25", 0, 0.80), row("ddim 25", 1, 0.90)]  # std 0.071
    rows += [row("unipc 8", 0, 0.70), row("unipc 8", 1, 0.85)]  # -0.075: within 2 stds
    rows += [row("unipc 4", 0, 0.60), row("unipc 4", 1, 0.65)]  # -0.225: beyond
    text = table(rows)
    assert (
        "| m | ddim 25 | 2 | 50 | 2.00 | 0.850 (std 0.071) | 0.400 (std 0.000) | 0.100 (std 0.000) | ref"
        in text
    )
    assert "| m | unipc 8 | 2 | 50 | 2.00 | 0.775 (-0.075) | 0.400 (+0.000) | 0.100 (+0.000) | yes |" in text
    assert "| m | unipc 4 | 2 | 50 | 2.00 | 0.625 (-0.225) | 0.400 (+0.000) | 0.100 (+0.000) | no |" in text
