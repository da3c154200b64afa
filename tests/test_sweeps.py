"""Sweep files: valid W&B sweeps, and each runs two proposals offline through W&B's own engine, each
proposal a W&B offline run whose config holds the proposed values."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SWEEPS = sorted((REPO / "configs/sweeps").glob("*.yaml"))


def test_there_are_sweeps_for_the_knobs_the_papers_ablate():
    names = " ".join(yaml.safe_load(p.read_text())["parameters"].__repr__() for p in SWEEPS)
    for knob in (
        "method.groups",
        "method.guidance_steps",
        "method.split_ratio",
        "init_args.p",
    ):
        assert knob in names
    assert {yaml.safe_load(p.read_text())["method"] for p in SWEEPS} == {"grid", "random", "bayes"}


def _tiny_args(sweep: dict, tiny_sd_dir, tiny_concepts, cache) -> list[str]:
    command = " ".join(map(str, sweep["command"]))
    expand_cfg = yaml.safe_load((REPO / command.split("--expand-config ")[1].split()[0]).read_text())
    method_args = expand_cfg["model"]["init_args"]["method"]["init_args"]
    args = [
        f"--expand.model.init_args.pretrained={tiny_sd_dir}", "--expand.trainer.accelerator=cpu",
        "--expand.model.init_args.method.num_inference_steps=4", "--expand.data.init_args.real.shots=2",
        "--expand.data.init_args.images_per_class=1", f"--expand.data.init_args.cache_dir={cache}",
        "--classify.trainer.max_epochs=1", "--classify.trainer.limit_test_batches=1",
        "--classify.model.init_args.backbone=resnet10t", "--classify.data.init_args.real.shots=2",
    ]  # fmt: skip
    if "inversion_steps" in method_args:
        args.append("--expand.model.init_args.method.inversion_steps=2")
    if "extractor" in method_args:
        args.append("--expand.model.init_args.method.extractor=oracle")
    if expand_cfg["model"]["init_args"].get("concepts"):
        args.append(f"--expand.model.init_args.concepts={tiny_concepts}")
    return args


@pytest.mark.slow
@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_sweep_runs_two_proposals_offline(path, tiny_sd_dir, tiny_concepts, tmp_path, monkeypatch):
    from tools.sweep_local import load_sweep, run_sweep

    monkeypatch.chdir(REPO)
    sweep = load_sweep(path)  # validates against the sweeps package's schema
    out = tmp_path / "sweep"
    rows = run_sweep(path, 2, out, _tiny_args(sweep, tiny_sd_dir, tiny_concepts, tmp_path / "cache"))
    assert len(rows) == 2 and all(r["test/acc"] is not None for r in rows)
    assert (out / "results.csv").is_file() and "Best: test/acc" in (out / "results.md").read_text()
    run_dirs = sorted((out / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 2
    proposed = [{k: v for k, v in r.items() if k != "test/acc"} for r in rows]
    seen = []
    for run_dir in run_dirs:
        result = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--summary", "--json",
                                 str(run_dir)], capture_output=True, text=True, check=True)  # fmt: skip
        state = json.loads(result.stdout)
        config = {k: (v.get("value") if isinstance(v, dict) and "value" in v else v)
                  for k, v in state["config"].items()}  # fmt: skip
        seen.append({k: config[k] for k in proposed[0]})
        assert "test/acc" in json.dumps(state["summary"])
    normalise = lambda d: {k: str(v) for k, v in d.items()}  # noqa: E731
    assert sorted(map(str, map(normalise, seen))) == sorted(map(str, map(normalise, proposed)))


def test_stage_arguments_are_routed():
    from sweep import params_of, split_stage_args

    args = split_stage_args(["--expand.model.init_args.x=1", "--classify.data.init_args.p", "0.5"])
    assert args == {"expand": ["--model.init_args.x=1"], "classify": ["--data.init_args.p=0.5"]}
    assert params_of(args) == {"expand.model.init_args.x": "1", "classify.data.init_args.p": "0.5"}
    with pytest.raises(ValueError, match="must start with"):
        split_stage_args(["--model.init_args.x=1"])
