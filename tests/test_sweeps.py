"""Sweep files: valid W&B sweeps, and each runs two proposals offline through W&B's own engine, each
proposal a W&B offline run whose config holds the proposed values with their types, once; the local
runner ends with a summary run holding the sweep's curves."""

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SWEEPS = sorted((REPO / "configs/sweeps").glob("*.yaml"))


def test_there_are_sweeps_for_the_knobs_the_papers_ablate():
    names = " ".join(yaml.safe_load(p.read_text())["parameters"].__repr__() for p in SWEEPS)
    for knob in (  # the keys of the resolved config, which the stages log under the same names
        "expand.model.init_args.method.init_args.groups",
        "expand.model.init_args.method.init_args.guidance_steps",
        "expand.model.init_args.method.init_args.split_ratio",
        "classify.data.init_args.p",
    ):
        assert knob in names
    assert {yaml.safe_load(p.read_text())["method"] for p in SWEEPS} == {"grid", "random", "bayes"}


def test_every_sweep_tunes_on_the_validation_split():
    """Settings are chosen on the validation split; the test split is used once, for the final table."""
    from tools.sweep_local import fixed_arguments

    for path in SWEEPS:
        sweep = yaml.safe_load(path.read_text())
        assert sweep["metric"]["name"].startswith("validation/"), path.name
        assert "--classify.data.init_args.eval_split=validation" in fixed_arguments(sweep)["args"], path.name


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("method: grid\nparameters: [", "not a readable sweep file"),
        ("- a list", "a sweep file is a YAML mapping"),
        ("method: grid\nparameters: {a: {values: [1]}}\n", "give the metric to rank the runs by"),
    ],
)
def test_a_bad_sweep_file_is_named_with_what_is_wrong(tmp_path, text, problem):
    from tools.sweep_local import fixed_arguments, load_sweep

    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(ValueError, match=f"s.yaml: {problem}"):
        load_sweep(tmp_path / "s.yaml")
    with pytest.raises(ValueError, match="ends with --expand-config and no config after it"):
        fixed_arguments({"command": ["--expand-config"]})


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
    from wandb_runs import offline_runs

    from tools.sweep_local import load_sweep, run_sweep

    monkeypatch.chdir(REPO)
    sweep = load_sweep(path)  # validates against the sweeps package's schema
    out = tmp_path / "sweep"
    rows = run_sweep(path, 2, out, _tiny_args(sweep, tiny_sd_dir, tiny_concepts, tmp_path / "cache"))
    metric = sweep["metric"]["name"]
    assert len(rows) == 2 and all(r[metric] is not None for r in rows)
    assert (out / "results.csv").is_file() and f"Best: {metric}" in (out / "results.md").read_text()
    runs = list(offline_runs(out / "wandb").values())
    (summary_run,) = [r for r in runs if r["name"] == f"{path.stem}-summary"]
    proposals = [r for r in runs if r is not summary_run]
    assert len(proposals) == 2
    proposed = [{k: v for k, v in r.items() if k != metric} for r in rows]
    seen = [{k: r["config"][k] for k in proposed[0]} for r in proposals]
    for run in proposals:
        assert metric in run["summary"] and "test/acc" not in run["summary"]  # the test split stays unseen
        # each stage's settings once, under its prefix: no bare copy from a module or a stage's logger,
        # no second spelling (the tiny arguments say `method.num_inference_steps`, the resolved config
        # `method.init_args.num_inference_steps`)
        keys = list(run["config"])
        assert not [k for k in keys if k.startswith(("data.", "model.", "trainer."))] and "p" not in keys
        assert "classify.data.init_args.p" in keys
        spelled = [".".join(part for part in k.split(".") if part != "init_args") for k in keys]
        assert len(set(spelled)) == len(spelled)
    # the same values, numbers as numbers and "chaos" a string (JSON, so W&B, has one kind of number:
    # its reader gives 0.0 back as 0)
    kind = lambda v: "str" if isinstance(v, str) else "bool" if isinstance(v, bool) else "number"  # noqa: E731
    typed = lambda d: sorted((k, kind(v), v) for k, v in d.items())  # noqa: E731
    assert sorted(map(typed, seen)) == sorted(map(typed, proposed))
    assert all(f"sweep/{k.rsplit('.', 1)[1]}_table" in summary_run["summary"] for k in sweep["parameters"])


def test_stage_arguments_are_routed_and_typed():
    from sweep import params_of, split_stage_args

    args = split_stage_args(["--expand.model.init_args.x=1", "--classify.data.init_args.p", "0.5"])
    assert args == {"expand": ["--model.init_args.x=1"], "classify": ["--data.init_args.p=0.5"]}
    assert params_of(args) == {"expand.model.init_args.x": 1, "classify.data.init_args.p": 0.5}
    values = ["3", "0.25", "1e-4", "true", "True", "chaos", "none", "off", "null", "[1, 2]"]
    typed = params_of({"expand": [f"--v{i}={v}" for i, v in enumerate(values)], "classify": []})
    assert list(typed.values()) == [3, 0.25, 1e-4, True, True, "chaos", "none", "off", None, [1, 2]]
    assert type(typed["expand.v0"]) is int and type(typed["expand.v1"]) is float
    with pytest.raises(ValueError, match="must start with"):
        split_stage_args(["--model.init_args.x=1"])


def _fake_expansion(monkeypatch):
    """expand.py predict replaced by a set of 2 images a class with a set_metrics.json."""
    import expand
    from diffexpand.manifest import append_manifest

    def cli_main(args):
        out = Path(next(a for a in args if a.startswith("--output_dir=")).split("=", 1)[1])
        (out / "images").mkdir(parents=True, exist_ok=True)
        records = []
        for label in range(10):
            for k in range(2):
                Image.new("RGB", (32, 32), (20 * label, 90, 160)).save(out / f"images/{label}_{k}.png")
                records.append({"file_name": f"images/{label}_{k}.png", "label": label, "id": f"{label}_{k}"})
        append_manifest(out, records)
        (out / "set_metrics.json").write_text(json.dumps({"images": 20, "oracle": {"faithfulness": 0.9}}))

    monkeypatch.setattr(expand, "cli_main", cli_main)


def test_a_sweep_run_holds_each_setting_once_with_its_type(tmp_path, monkeypatch):
    """One sweep.py run (expansion faked, classifier real and tiny): the swept values and the
    classifier's resolved config share the `classify.` keys — one key per setting, typed."""
    from wandb_runs import offline_runs

    import sweep

    _fake_expansion(monkeypatch)
    monkeypatch.chdir(REPO)
    summary = sweep.run("configs/expand/diffii.yaml", "configs/classifier.yaml", [
        "--expand.model.init_args.method.split_ratio=0.5",
        "--expand.model.init_args.method.guidance_steps=chaos",
        "--classify.data.init_args.p=0.25", "--classify.data.init_args.real.shots=2",
        "--classify.trainer.max_epochs=1", "--classify.trainer.limit_test_batches=1",
        "--classify.model.init_args.backbone=resnet10t",
    ], root=str(tmp_path))  # fmt: skip
    assert summary["set/faithfulness"] == 0.9 and "test/acc" in summary
    ((name, run),) = offline_runs(tmp_path / "wandb").items()
    config = run["config"]
    assert config["expand.model.init_args.method.split_ratio"] == 0.5
    assert config["expand.model.init_args.method.guidance_steps"] == "chaos"
    assert config["classify.data.init_args.p"] == 0.25 and config["classify.data.init_args.real.shots"] == 2
    assert type(config["classify.data.init_args.real.shots"]) is int
    assert config["classify.model.init_args.backbone"] == "resnet10t"  # the resolved classifier config
    assert not [k for k in config if k.startswith(("data.", "model.", "trainer."))] and "p" not in config
    assert "test/acc" in run["summary"] and "test/confusion_matrix_table" in run["summary"]


def test_a_local_sweep_ends_with_a_summary_run_of_curves(tmp_path, monkeypatch):
    """tools/sweep_local.py over the whole K x stage grid (each run faked from its typed values): the
    summary run draws test accuracy against K, one line per stage, and bars per stage."""
    from wandb_runs import offline_runs, table

    import sweep
    from tools.sweep_local import run_sweep

    seen_types = set()

    def fake_run(expand_config, classify_config, args, root, project):
        params = sweep.params_of(sweep.split_stage_args(args))
        groups, stage = (
            params["expand.model.init_args.method.init_args.groups"],
            params["expand.model.init_args.method.init_args.guidance_steps"],
        )
        seen_types.add((type(groups), type(stage)))
        return {
            "validation/acc": 0.5 + 0.01 * groups + (0.1 if stage == "semantic" else 0.0),
            "set/faithfulness": 0.8,
        }

    monkeypatch.setattr(sweep, "run", fake_run)
    path = REPO / "configs/sweeps/distdiff_groups_stage.yaml"
    rows = run_sweep(path, 20, tmp_path, [])
    assert len(rows) == 12 and seen_types == {(int, str)}  # the grid, exhausted; values typed
    best = rows[0]
    assert best["expand.model.init_args.method.init_args.groups"] == 5
    assert best["validation/acc"] == pytest.approx(0.65)

    ((name, run),) = offline_runs(tmp_path / "wandb").items()
    assert run["name"] == "distdiff_groups_stage-summary"
    summary, run_dir = run["summary"], tmp_path / "wandb" / name
    curve = table(run_dir, summary, "sweep/groups")
    assert curve["columns"] == ["groups", "validation_acc", "guidance_steps"]
    assert len(curve["data"]) == 12 and all(type(row[0]) is int for row in curve["data"])
    semantic = [row for row in curve["data"] if row[2] == "semantic"]
    assert [row[0] for row in semantic] == [1, 2, 3, 5]  # one line per stage, in K order
    bars = {row[0]: row[1] for row in table(run_dir, summary, "sweep/guidance_steps")["data"]}
    assert bars["semantic"] == pytest.approx(bars["chaos"] + 0.1)
    results = table(run_dir, summary, "sweep/results")
    assert "set_faithfulness" in results["columns"] and len(results["data"]) == 12
    assert summary["best/expand.model.init_args.method.init_args.groups"] == 5
    assert summary["best/expand.model.init_args.method.init_args.guidance_steps"] == "semantic"
