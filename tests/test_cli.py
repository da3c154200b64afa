"""Both shells through `cli_main([...])`, in-process, on the tiny stack; every config parses."""

import importlib
import io
import json
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import yaml

from diffexpand.paths import DEFAULT_PRIOR

REPO = Path(__file__).resolve().parents[1]
# overlays (base/ parts, paper/ presets: tests/test_paper_presets.py) and sweeps are not whole configs
NOT_WHOLE = {"sweeps", "base", "paper"}
CONFIGS = sorted(c for c in (REPO / "configs").rglob("*.yaml") if not NOT_WHOLE & set(c.parts))


def test_importing_the_shells_has_no_side_effects():
    code = (
        "import sys, train, expand; "
        "assert 'lightning_modules.prior' not in sys.modules; "
        "assert callable(train.cli_main) and callable(expand.cli_main)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def _subcommand(config: Path) -> str:
    return "predict" if "expand" in config.parts else "fit"


@pytest.mark.parametrize("config", CONFIGS, ids=[str(c.relative_to(REPO)) for c in CONFIGS])
def test_every_config_parses_and_instantiates(config, tiny_concepts):
    """Every YAML under configs/ builds its model, datamodule and trainer (without running)."""
    shell = importlib.import_module("expand" if _subcommand(config) == "predict" else "train")
    cpu = [
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.strategy=auto",
        "--trainer.precision=32-true",
    ]
    if "concepts:" in config.read_text() and shell.__name__ == "expand":  # not trained on a fresh clone
        cpu.append(f"--model.init_args.concepts={tiny_concepts}")
    if "init_from: outputs/" in config.read_text():  # an earlier stage's export: not on a fresh clone
        cpu.append(f"--model.init_args.init_from={DEFAULT_PRIOR}")
        stack = yaml.safe_load(config.read_text())["model"]["init_args"]["stack"]
        unet = json.loads((DEFAULT_PRIOR / "unet" / "config.json").read_text())
        if stack["unet_channels"] != unet["block_out_channels"]:  # a v2 stage: its VAE, text encoder fit
            cpu.append("--model.init_args.init_parts=[vae,text_encoder]")
    cli = shell.cli_main([f"--config={config}", "--trainer.logger=false", *cpu], run=False)
    assert cli.model is not None and cli.datamodule is not None


def test_train_fit_runs_the_prior_recipe_on_tiny_settings(tmp_path):
    import train

    out = tmp_path / "prior"
    train.cli_main([
        "fit", "--config", str(REPO / "configs/prior.yaml"),
        "--trainer.max_steps=4", "--trainer.limit_val_batches=1", "--trainer.val_check_interval=2",
        "--trainer.logger=false", "--trainer.callbacks=null", "--trainer.enable_checkpointing=false",
        f"--trainer.default_root_dir={tmp_path}",
        "--model.init_args.vae_steps=2", "--model.init_args.unet_steps=2",
        f"--model.init_args.output_dir={out}",
        "--data.init_args.batch_size=8",
    ])  # fmt: skip
    assert (out / "model_index.json").exists()
    from diffexpand.models import load_sd_components

    parts = load_sd_components(out)
    assert parts.vae.config.scaling_factor != 1.0  # measured from latents at the stage switch


def test_expand_predict_writes_a_synthetic_set(tiny_sd_dir, tmp_path):
    import expand

    out = tmp_path / "synthetic"
    buffer = io.StringIO()
    args = [
        "predict", "--config", str(REPO / "configs/expand/txt2img.yaml"),
        f"--model.init_args.pretrained={tiny_sd_dir}", f"--output_dir={out}",
        "--data.init_args.real=null", "--data.init_args.class_names=[top,trousers,dress,shoe,bag]",
        "--model.init_args.method.num_inference_steps=2",
        "--data.init_args.images_per_class=2", "--data.init_args.batch_size=3",
    ]  # fmt: skip
    with redirect_stdout(buffer):
        expand.cli_main(args)
    records = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert len(records) == 5 * 2
    assert {r["label"] for r in records} == set(range(5))
    for r in records:
        assert (out / r["file_name"]).is_file()
    assert str(out.resolve()) in buffer.getvalue()  # the run names where the set went
    from PIL import Image

    preview = Image.open(out / "preview.png")  # one row per class, its name, then 2 tiles of 64 px
    assert preview.height == 5 * (64 + 2) + 2 and preview.width > 2 * (64 + 2) + 2
    # A rerun finds everything done and writes nothing new.
    expand.cli_main(args)
    assert len((out / "metadata.jsonl").read_text().splitlines()) == 10


def test_expand_without_config_runs_diffii_on_the_tiny_benchmark(tiny_concepts, tmp_path, monkeypatch):
    import expand

    cpu = ["--trainer.accelerator=cpu", "--trainer.logger=false"]
    cli = expand.cli_main([*cpu, f"--model.init_args.concepts={tiny_concepts}"], run=False)
    assert cli.model.method.name == "diffii"
    real = cli.datamodule.hparams.real
    assert (real["dataset"], real["subset"], real["shots"]) == ("fashion_mnist", "few_shot", 5)
    # A fresh clone, run from a directory without outputs/: the default uses the committed concepts.
    monkeypatch.chdir(tmp_path)
    small = ["--data.init_args.images_per_class=1", "--model.init_args.method.num_inference_steps=2",
             "--model.init_args.method.inversion_steps=2"]  # fmt: skip
    expand.cli_main(["predict", *cpu, *small])
    written = (tmp_path / "outputs/synthetic/metadata.jsonl").read_text().splitlines()
    assert len(written) == 10 and all(json.loads(line)["method"] == "diffii" for line in written)


def test_method_settings_are_typed_and_documented(capsys):
    """`--print_config` shows every method setting with its default, `--help` documents them, and a
    misspelled setting is refused with its name."""
    import expand

    config = str(REPO / "configs/expand/diffii.yaml")
    with pytest.raises(SystemExit):
        expand.cli_main(["predict", "--config", config, "--print_config"])
    printed = capsys.readouterr().out
    method = yaml_of(printed)["model"]["init_args"]["method"]
    assert method["class_path"].endswith("DiffII")
    assert method["init_args"]["split_ratio"] == 0.3 and method["init_args"]["inversion_guidance"] == 1.0
    with pytest.raises(SystemExit):
        expand.cli_main(["predict", "--config", config, "--model.init_args.method.help", "DistDiff"])
    assert "ρ, the step on the residual transform" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        expand.cli_main(["predict", "--config", config, "--model.init_args.method.split_ration=0.5"])
    error = capsys.readouterr().err
    assert "'split_ration' is not accepted" in error and "did you mean 'split_ratio'?" in error
    assert "DiffII accepts: num_inference_steps, guidance_scale, inversion_steps" in error


def yaml_of(text: str) -> dict:
    import yaml

    return yaml.safe_load(text)
