"""One sweep run: expand, measure the synthetic set, train and test the classifier — one W&B run.

    python sweep.py --expand-config configs/expand/diffii.yaml --classify-config configs/classifier.yaml \\
        --expand.model.init_args.method.split_ratio=0.5 --classify.data.init_args.p=0.5

Arguments `--expand.X=v` and `--classify.X=v` go to `expand.py predict` and `train.py fit` as `--X=v`,
so a W&B sweep's `${args}` sets any LightningCLI value of either stage. Runs whose expansion settings
are equal share one synthetic set (under --root, named by a hash of those settings); the expander's
resume logic makes the second use free. The W&B run gets the proposed values as its config, typed as
the command line spells them (0.5 a float, 3 an int, true a bool; LightningCLI key names prefixed by
the stage, as the sweep names them), the classifier's resolved config under the same `classify.` keys
(a swept value is one key, not two), and the set metrics and test accuracy as its summary.
`wandb agent` starts this program (see configs/sweeps/); `tools/sweep_local.py` runs the same sweep
files offline and logs the curves of a sweep (the metric against each swept value) in a summary run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

STAGES = ("expand", "classify")


def split_stage_args(args: list[str]) -> dict[str, list[str]]:
    """`--expand.a.b=1` -> {"expand": ["--a.b=1"]}; values may also follow as the next item."""
    out: dict[str, list[str]] = {s: [] for s in STAGES}
    i = 0
    while i < len(args):
        arg = args[i]
        stage = next((s for s in STAGES if arg.startswith(f"--{s}.")), None)
        if stage is None:
            raise ValueError(f"sweep argument {arg!r} must start with --expand. or --classify.")
        key = "--" + arg[len(f"--{stage}.") :]
        if "=" not in key and i + 1 < len(args) and not args[i + 1].startswith("--"):
            key, i = f"{key}={args[i + 1]}", i + 1
        out[stage].append(key)
        i += 1
    return out


def typed_value(text: str):
    """A command-line value as the type it spells: "0.5" -> 0.5, "3" -> 3, "true" / "True" -> True,
    "null" -> None, "[1, 2]" -> [1, 2]; anything else ("chaos") stays a string. JSON, not YAML: YAML
    reads "1e-4" as a string and "off" as False."""
    try:
        return json.loads(text)
    except ValueError:
        return {"True": True, "False": False}.get(text, text)  # Python's spelling (wandb agent's ${args})


def params_of(stage_args: dict[str, list[str]]) -> dict:
    """{"expand.model.init_args.x": typed value, ...}: the stage-prefixed names the sweep files use."""
    return {
        f"{s}.{a[2:].split('=', 1)[0]}": typed_value(a.split("=", 1)[1])
        for s in STAGES
        for a in stage_args[s]
    }


def run(
    expand_config: str,
    classify_config: str | None,
    args: list[str],
    root: str = "outputs/sweeps",
    project: str = "diffexpand-sweeps",
) -> dict:
    """Run the pipeline once; returns the summary metrics."""
    import wandb

    import expand
    import train
    from callbacks.set_metrics import summary_figures
    from callbacks.wandb_logging import config_prefix

    stage_args = split_stage_args(args)
    params = params_of(stage_args)
    expand_key = hashlib.sha256(json.dumps([expand_config, stage_args["expand"]]).encode()).hexdigest()[:12]
    synthetic = Path(root) / f"synthetic-{expand_key}"
    # each proposal's classifier its own folder, so its checkpoints resume that proposal only
    run_spec = json.dumps([expand_config, classify_config, stage_args])
    run_key = hashlib.sha256(run_spec.encode()).hexdigest()[:12]
    Path(root).mkdir(parents=True, exist_ok=True)
    # Joins the agent's run online (WANDB_RUN_ID is set by `wandb agent`); a fresh offline run otherwise.
    config = params | {
        "expand_config": expand_config,
        "classify_config": classify_config,
        "synthetic_set": str(synthetic),
    }
    # dir absolute: W&B's service may have been started from another working directory
    run = wandb.init(project=project, dir=str(Path(root).resolve()), config=config, reinit="finish_previous")
    offline, sync_dir = run.offline, run.sync_dir
    # The expansion config's own set-metrics callback measures the set (set_metrics.json); its W&B
    # logger joins this run: its settings as expand.…, the set's figures, table and grid.
    expand_args = ["predict", "--config", expand_config, f"--output_dir={synthetic}"]
    with config_prefix("expand"):
        expand.cli_main([*expand_args, *stage_args["expand"]])
    summary: dict = {}
    metrics_file = synthetic / "set_metrics.json"
    if metrics_file.exists():  # also for an expansion config without a W&B logger
        summary |= summary_figures(json.loads(metrics_file.read_text()))
        run.log(summary)
    if classify_config:
        classify_args = [
            "fit",
            "--config",
            classify_config,
            f"--data.init_args.synthetic=[{synthetic}]",
            f"--trainer.logger.init_args.save_dir={root}",
            f"--trainer.default_root_dir={Path(root) / f'classifier-{run_key}'}",
            *stage_args["classify"],
        ]
        with config_prefix("classify"):  # its resolved config under the names the sweep gives them
            cli = train.cli_main(classify_args)
        final = ("test/", "validation/")  # the classifier names its final figures after the split
        summary |= {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith(final)}
    if wandb.run is not None:  # the classifier's logger closes the run it used
        wandb.run.summary.update(summary)
        wandb.finish()
    if offline:
        print(f"W&B offline run in {sync_dir}; upload it with: wandb sync {sync_dir}")
    return summary


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--expand-config", required=True)
    parser.add_argument("--classify-config", default=None)
    parser.add_argument("--root", default="outputs/sweeps")
    parser.add_argument("--project", default=os.environ.get("WANDB_PROJECT", "diffexpand-sweeps"))
    known, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    summary = run(known.expand_config, known.classify_config, rest, known.root, known.project)
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    from diffexpand.cli import run_with_clear_errors, silence_known_noise

    silence_known_noise()
    run_with_clear_errors(main)
