"""Every configs/expand/*.yaml runs end to end through `expand.cli_main` on the tiny stack."""

import json
from pathlib import Path

import pytest
import yaml

import expand

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs/expand").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_expand_config_runs(config, tiny_sd_dir, tiny_concepts, tmp_path):
    cfg = yaml.safe_load(config.read_text())
    method, method_args = cfg["model"]["init_args"]["method"], cfg["model"]["init_args"]["method_args"]
    out = tmp_path / "out"
    args = [
        "predict", "--config", str(config), f"--output_dir={out}", "--trainer.accelerator=cpu",
        f"--model.init_args.pretrained={tiny_sd_dir}", "--model.init_args.method_args.num_inference_steps=3",
        "--data.init_args.real.shots=2", "--data.init_args.images_per_class=1",
        "--data.init_args.batch_size=4", f"--data.init_args.cache_dir={tmp_path / 'cache'}",
    ]  # fmt: skip
    if "inversion_steps" in method_args:
        args.append("--model.init_args.method_args.inversion_steps=3")
    if "guidance_steps" in method_args:  # 4 steps at strength 0.5 sample 2: M = 2 guides at the first
        args += [
            "--model.init_args.method_args.num_inference_steps=4",
            "--model.init_args.method_args.guidance_steps=2",
        ]
    if "extractor" in method_args:  # the oracle is small; EfficientNet at 224 px is slower on CPU
        args.append("--model.init_args.method_args.extractor=oracle")
    if "candidates" in method_args:
        args.append("--model.init_args.method_args.candidates=2")
    if cfg["model"]["init_args"].get("concepts"):
        args.append(f"--model.init_args.concepts={tiny_concepts}")
    expand.cli_main(args)
    records = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert sorted(r["label"] for r in records) == list(range(10))
    assert all((out / r["file_name"]).is_file() and r["method"] == method for r in records)
