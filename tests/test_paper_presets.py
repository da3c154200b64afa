"""configs/expand/paper/: every method's papers' denoising as an overlay on its config. The overlay
parses with the method's config and changes the denoising settings only, and the guidance strength where
the config's was tuned for the tiny world (Diff-II + DistDiff)."""

from pathlib import Path

import pytest
import yaml

from diffexpand.methods import available_methods

REPO = Path(__file__).resolve().parents[1]
DENOISING = {"solver", "guidance_interval", "num_inference_steps", "inversion_steps", "guidance_steps"}
GUIDANCE_STRENGTH = {"step_size", "bound"}  # DistDiff's ρ and ε


def method_settings(capsys, *configs: Path) -> dict:
    import expand

    args = ["predict"] + [a for c in configs for a in ("--config", str(c))] + ["--print_config"]
    with pytest.raises(SystemExit):
        expand.cli_main(args)
    return yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]["method"]["init_args"]


@pytest.mark.parametrize("name", available_methods())
def test_paper_preset_changes_only_the_denoising(name, capsys):
    config, preset = REPO / "configs/expand" / f"{name}.yaml", REPO / "configs/expand/paper" / f"{name}.yaml"
    assert preset.is_file(), f"configs/expand/paper/{name}.yaml is missing"
    default, paper = method_settings(capsys, config), method_settings(capsys, config, preset)
    changed = {k for k in default.keys() | paper.keys() if default.get(k) != paper.get(k)}
    assert changed <= DENOISING | GUIDANCE_STRENGTH, changed
    assert paper.get("solver", "ddim") == "ddim" and paper.get("guidance_interval", [0.0, 1.0]) == [0.0, 1.0]
    assert paper["num_inference_steps"] >= default["num_inference_steps"]


def test_paper_preset_of_diffii_distdiff_restores_distdiffs_official_strength(capsys):
    """The combined method's default ρ / ε were tuned on validation; its paper preset takes DistDiff's own
    (configs/expand/distdiff.yaml keeps the official ρ 10, ε 0.2)."""
    expand_dir = REPO / "configs/expand"
    official = method_settings(capsys, expand_dir / "distdiff.yaml")
    tuned = method_settings(capsys, expand_dir / "diffii_distdiff.yaml")
    paper = method_settings(
        capsys, expand_dir / "diffii_distdiff.yaml", expand_dir / "paper/diffii_distdiff.yaml"
    )
    assert (tuned["step_size"], tuned["bound"]) != (official["step_size"], official["bound"])
    assert (paper["step_size"], paper["bound"]) == (official["step_size"], official["bound"])
