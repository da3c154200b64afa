"""configs/expand/paper/: every method's papers' denoising as an overlay on its config. The overlay
parses with the method's config and changes the denoising settings only."""

from pathlib import Path

import pytest
import yaml

from diffexpand.methods import available_methods

REPO = Path(__file__).resolve().parents[1]
DENOISING = {"solver", "guidance_interval", "num_inference_steps", "inversion_steps", "guidance_steps"}


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
    assert changed <= DENOISING, changed
    assert paper.get("solver", "ddim") == "ddim" and paper.get("guidance_interval", [0.0, 1.0]) == [0.0, 1.0]
    assert paper["num_inference_steps"] >= default["num_inference_steps"]
