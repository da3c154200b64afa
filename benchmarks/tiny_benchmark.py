"""The tiny benchmark: the Fashion-MNIST analogue of the Diff-II paper's Table 1, on the committed prior.

    python benchmarks/tiny_benchmark.py --profile quick     # make demo: 5-shot, seed 0, 6 rows
    python benchmarks/tiny_benchmark.py --profile full      # make bench: 5/10-shot x 3 seeds, 10 rows
    python benchmarks/tiny_benchmark.py --split validation  # tune on the validation split
    python benchmarks/tiny_benchmark.py --split validation --validation-per-class 500  # less noise
    python benchmarks/tiny_benchmark.py --profile full --classifier-seeds 0 1 2  # 3 classifier runs a subset

For each n-shot subset and seed: the concepts are learned once (configs/concept.yaml; 5-shot seed 0 uses the
committed assets/concepts folder unless --concept-args are given; `--concept-runs K`: K times, keeping the run
tools/select_concepts.py's label-free check prefers) and serve every method that
needs them; each method expands the subset 5x (configs/expand/<method>.yaml); a classifier
(configs/classifier.yaml) trains on real + synthetic and is evaluated on `--split`: `test` (default, the
full test split: use it once, for the final table) or `validation` (carved from the training split,
disjoint from every few-shot subset with seed < 10 and shots <= 50: tune every setting on it).

Rows: Original (real only); the "Real x5" ceiling (as many *other real* training images as a method adds,
disjoint from the subset and the validation split, drawn by the subset's seed and written as a set);
one row per method. Every set, the ceiling's included, reaches the classifier the same way (real samples
replaced with the config's p, the same optimizer steps), so rows differ in their images. Per row: mean ± std
accuracy over seeds, the paired gain over Original (per seed, against Original on the same subset:
mean ± std, and the seeds where the method wins), the gain as a share of the ceiling's, the accuracy of
the classifier trained on the set alone (synthetic only: full profile), the oracle faithfulness and
diversity of the set, and generation images/s. The full profile adds the Diff-II split ratio curve
(faithfulness vs diversity as s goes from 0 to 1), and each row's paired gain class by class (where a
gain comes from). Everything is written under --out: report.md, results.csv, results_per_seed.csv,
results_per_class.csv (with a -validation suffix for the validation split), per-class grids, the plot,
W&B offline runs; each classifier run's figures, its accuracy per class and confusion matrix included,
in classifier/<split>/<row>-<shots>shot-seed<seed>.json. Finished stages are reused, if made with the same
extra settings, from the same config files, concepts and sets, and on the same prior (not checked: the code).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository's packages

from benchmarks.bench_protocol import (  # noqa: E402
    CEILING,
    CEILING_METHOD,
    CLASSIFIER_CONFIG,
    CONCEPT_CONFIG,
    EXPANSION_RATIO,
    IMAGE_SIZE,
    MIXING,
    PROFILES,
    REPO,
    ROWS,
    SPLIT_RATIOS,
    SPLITS,
    SYNTHETIC_ONLY,
    classifier_config_seed,
    method_config,
    say,
    uses_concepts,
)
from benchmarks.bench_report import write_report  # noqa: E402
from benchmarks.machine import machine_summary  # noqa: E402
from benchmarks.stage_records import (  # noqa: E402
    REMAKE,
    inputs_digest,
    prior_fingerprint,
    prior_of,
    read_record,
    recorded_accuracy,
    reused,
    set_inputs,
    write_record,
)
from diffexpand.classification.metrics import accuracy_per_class_from_confusion  # noqa: E402
from diffexpand.data.subsets import VALIDATION_PER_CLASS  # noqa: E402

COMMITTED_CONCEPTS = REPO / "assets" / "concepts"
VALIDATION_SIZE_ARG = "--data.init_args.validation_per_class="  # how a classifier run is given the size
PERIODIC_VALIDATION_BATCHES = 1  # of the eval split, every 10 epochs (the final test pass reads all of it)


def ensure_concepts(out: Path, shots: int, seed: int, extra: list[str]) -> Path:
    """The concept folder of a subset: the committed one when it exists (5-shot seed 0, made by
    configs/concept.yaml), else learned once under --out."""
    committed = COMMITTED_CONCEPTS / f"fashion_mnist-{shots}shot-seed{seed}"
    if not extra and (committed / "concepts.json").is_file():
        return committed
    return learn_concepts(out, out / "concepts" / f"{shots}shot-seed{seed}", shots, seed, extra)


def learn_concepts(out: Path, folder: Path, shots: int, seed: int, extra: list[str]) -> Path:
    """`folder` learned by configs/concept.yaml on the subset (or the one already there)."""
    import train

    record = folder.with_name(f"{folder.name}.bench.json")  # beside the folder: it stays a concept folder
    config = CONCEPT_CONFIG
    settings = {
        "extra": list(extra),
        "inputs": inputs_digest(config),
        "prior": prior_fingerprint(config, extra),
    }
    if (folder / "concepts.json").is_file():
        if record.is_file():
            reused(record, settings)
    else:
        say(f"learning concepts for {shots}-shot seed {seed} into {folder.name}")
        concept_args = [
            "fit",
            "--config",
            str(config),
            f"--data.init_args.shots={shots}",
            f"--data.init_args.seed={seed}",
            f"--model.init_args.output_dir={folder}",
            f"--trainer.default_root_dir={out / 'runs' / folder.name}",
            "--trainer.logger=false",
            "--trainer.callbacks=null",
            "--trainer.enable_checkpointing=false",
        ]
        train.cli_main([*concept_args, *extra])
        write_record(record, {"settings": settings})
    return folder


def chosen_concepts(out: Path, shots: int, seed: int, extra: list[str], runs: int) -> Path:
    """The subset's concepts; with runs > 1, learned that many times (run r with seed_everything r, run 0
    being `ensure_concepts`'s) and the run whose learned prompts' samples lie nearest to their own class's
    few shots kept (`diffexpand.concepts.selection`: no label beyond the subset's). The choice is kept in
    concepts/<shots>shot-seed<seed>.selection.json."""
    first = ensure_concepts(out, shots, seed, extra)
    if runs == 1:
        return first
    folders = [first] + [
        learn_concepts(out, out / "concepts" / f"{shots}shot-seed{seed}-run{r}", shots, seed,
                       [*extra, f"--seed_everything={r}"])
        for r in range(1, runs)
    ]  # fmt: skip
    record = out / "concepts" / f"{shots}shot-seed{seed}.selection.json"
    # by name and content, not path: a copied or moved --out keeps its choice
    settings = {"runs": [f.name for f in folders], "inputs": inputs_digest(*folders)}
    if record.is_file():
        chosen = reused(record, settings, "chosen")["chosen"]
        if not isinstance(chosen, int) or chosen not in range(len(folders)):
            raise ValueError(f"{record}: chosen run {chosen!r} is not one of the {runs}; {REMAKE}")
        return folders[chosen]
    from diffexpand.concepts.selection import score_runs
    from tools.select_concepts import few_shot_images

    say(f"choosing among {runs} concept runs for {shots}-shot seed {seed}")
    images, labels = few_shot_images("fashion_mnist", None, shots, seed, IMAGE_SIZE)
    result = score_runs(folders, images, labels)
    chosen = folders[result["chosen"]]
    say(f"chose {chosen.name}: mean agreement " + ", ".join(f"{r['mean']:.3f}" for r in result["runs"]))
    write_record(record, {**result, "chosen_folder": str(chosen), "settings": settings})
    return chosen


def set_settings(method: str, concepts: Path, extra: list[str], paper: bool = False) -> dict:
    """What a set is made from: the extra settings, the solver choice, and a digest of the method's config
    files and (for a method that uses them) the concept folder."""
    from diffexpand.paths import paper_preset

    config = method_config(method)
    read = [config, REPO / "configs" / "expand" / "base"]
    if uses_concepts(config):
        read.append(concepts)
    if paper and paper_preset(method):
        read.append(paper_preset(method))
    return {
        "extra": list(extra),
        "paper": paper,
        "inputs": inputs_digest(*read),
        "prior": prior_fingerprint(config, extra),
    }


def here(info: dict, folder: Path) -> dict:
    """A reused set's record with the folder it lies in now: a record keeps the path it was written at,
    and a copied or moved --out must train on its own sets, not on the ones at the old path."""
    return {**info, "folder": str(folder)}


def make_set(
    out: Path, method: str, shots: int, seed: int, concepts: Path, extra: list[str], paper: bool = False
) -> dict:
    """Expand (or reuse) one synthetic set; returns its folder, generation images/s and oracle metrics.
    `paper`: with the method's papers' solver and steps (its configs/expand/paper/ overlay)."""
    import expand
    from diffexpand.evaluation.synthetic_quality import evaluate_set
    from diffexpand.oracle_cnn import OracleCNN
    from diffexpand.paths import DEFAULT_ORACLE, paper_preset

    folder = out / "sets" / f"{method}-{shots}shot-seed{seed}"
    info_file = folder / "bench.json"
    settings = set_settings(method, concepts, extra, paper)
    if info_file.is_file():
        return here(reused(info_file, settings), folder)
    say(f"expanding with {method} ({shots}-shot seed {seed})")
    config = method_config(method)
    args = [
        "--config",
        str(config),
        f"--output_dir={folder}",
        f"--data.init_args.real.shots={shots}",
        f"--data.init_args.real.seed={seed}",
        f"--data.init_args.cache_dir={out / 'cache'}",
    ]
    if uses_concepts(config):
        args.append(f"--model.init_args.concepts={concepts}")
    if paper and paper_preset(method):
        args[2:2] = ["--config", str(paper_preset(method))]
    cli = expand.cli_main([*args, *extra], run=False)
    start = time.perf_counter()
    cli.trainer.predict(cli.model, datamodule=cli.datamodule, return_predictions=False)
    seconds = time.perf_counter() - start
    images = len(cli.datamodule.records)
    quality = evaluate_set(folder, OracleCNN.load(DEFAULT_ORACLE))["oracle"]
    info = {
        "folder": str(folder),
        "images": images,
        "seconds": seconds,
        "images_per_s": images / seconds,
        "faithfulness": quality["faithfulness"],
        "diversity": quality["diversity"],
        "settings": settings,
    }
    write_record(info_file, info)
    return info


def make_ceiling_set(
    out: Path, shots: int, seed: int, validation_per_class: int = VALIDATION_PER_CLASS
) -> dict:
    """The "Real xN" set of a subset (or the one already written): EXPANSION_RATIO x shots real training
    images per class, outside the subset and the validation split (`validation_per_class` images per
    class), drawn by the subset's seed; returns its folder and oracle metrics, like `make_set`."""
    from diffexpand.data.readers import read_dataset
    from diffexpand.data.real_set import write_real_set
    from diffexpand.data.subsets import ceiling_indices, expanded_count, few_shot_indices, validation_indices
    from diffexpand.evaluation.synthetic_quality import evaluate_set
    from diffexpand.oracle_cnn import OracleCNN
    from diffexpand.paths import DEFAULT_ORACLE

    folder = out / "sets" / f"{CEILING_METHOD}-{shots}shot-seed{seed}"
    info_file = folder / "bench.json"
    if info_file.is_file():
        done = read_record(info_file, "folder")
        # a set drawn around another validation split may hold images the classifiers are evaluated on
        made = done.get("validation_per_class", VALIDATION_PER_CLASS)  # records before the option: default
        if made != validation_per_class:
            raise ValueError(
                f"{info_file} was drawn outside a validation split of {made} images per class, now "
                f"{validation_per_class}: give this run another --out, or delete that set to remake it"
            )
        return here(done, folder)
    say(f"writing the {CEILING} set ({shots}-shot seed {seed})")
    data = read_dataset("fashion_mnist", None, "train")
    subset = few_shot_indices(data.labels, shots, seed)  # the classifier's real subset (classifier.yaml)
    chosen = ceiling_indices(
        data.labels,
        subset,
        per_class=expanded_count(shots, EXPANSION_RATIO),  # what a method adds per class
        seed=seed,
        excluded=validation_indices(data.labels, per_class=validation_per_class),
    )
    write_real_set(folder, data, chosen, IMAGE_SIZE, seed)
    quality = evaluate_set(folder, OracleCNN.load(DEFAULT_ORACLE))["oracle"]
    info = {
        "folder": str(folder),
        "images": len(chosen),
        "images_per_s": None,  # not generated
        "faithfulness": quality["faithfulness"],
        "diversity": quality["diversity"],
    }
    if validation_per_class != VALIDATION_PER_CLASS:  # the default's records stay as they were
        info["validation_per_class"] = validation_per_class
    write_record(info_file, info)
    return info


def slug(row: str) -> str:
    """A row label as a file-name part ("Real ×5" -> "Real-5")."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", row).strip("-")


def priors_used(rows: list[str], concept_args: list[str], expand_args: list[str]) -> list[str]:
    """The priors a run's concepts and sets come from (the configs', unless the extra arguments name
    another): what its report says it measured."""
    configs = [method_config(ROWS[row]) for row in rows if ROWS[row]]
    configs = [config for config in configs if config.is_file()]  # the ceiling's set is real images
    priors = {prior_of(config, expand_args) for config in configs}
    if any(uses_concepts(config) for config in configs):
        priors.add(prior_of(CONCEPT_CONFIG, concept_args))
    return sorted(priors)


def classifier_settings(synthetic: str | None, extra: list[str]) -> dict:
    """What a classifier run is made from: the extra settings and a digest of the classifier config and
    the records and images of its sets (`synthetic`: folders joined by commas, or None)."""
    sets = [Path(s) for s in (synthetic or "").split(",") if s]
    read = [REPO / "configs/classifier.yaml", *(path for folder in sets for path in set_inputs(folder))]
    return {"extra": list(extra), "inputs": inputs_digest(*read)}


def classify(
    out: Path,
    row: str,
    synthetic: str | None,
    mixing: str,
    shots: int,
    seed: int,
    extra: list[str],
    split: str = "test",
    classifier_seed: int | None = None,
) -> float:
    """Train the classifier on the subset (+ the set, mixed by `mixing`) and evaluate it on `split`;
    its accuracy there. The result file names the split and the mixing, so figures never mix; it also
    keeps the accuracy per class and the confusion matrix (rows: true class). `classifier_seed`: the
    classifier's seed_everything instead of the config's (None: the config's)."""
    import train

    result_file = result_path(out, row, mixing, shots, seed, split, classifier_seed)
    name = result_file.stem
    key = f"{split}/acc"  # the classifier names its final figures after the split
    if classifier_seed is not None:
        extra = [*extra, f"--seed_everything={classifier_seed}"]
    settings = classifier_settings(synthetic, extra)
    if result_file.is_file():
        done = reused(result_file, settings, "metrics")
        if "settings" not in done and any("validation_per_class" in a for a in extra):
            raise ValueError(  # a record from before settings were kept was evaluated on the default split
                f"{result_file} predates the records' settings, so nothing says which validation split it "
                "was evaluated on: give this run another --out, or delete that stage to remake it"
            )
        if done.get("mixing", mixing) != mixing:  # the protocol's mixing, not a setting: checked here
            raise ValueError(
                f"{result_file} was made with mixing {done['mixing']}, now {mixing}: give this run another "
                "--out, or delete that stage to remake it"
            )
        return recorded_accuracy(result_file, done, key)
    say(f"training the classifier: {row}{' (set only)' if mixing == SYNTHETIC_ONLY else ''} "
        f"({shots}-shot seed {seed}, evaluated on {split})")  # fmt: skip
    classify_args = [
        "fit",
        "--config",
        str(CLASSIFIER_CONFIG),
        f"--data.init_args.real.shots={shots}",
        f"--data.init_args.real.seed={seed}",
        f"--data.init_args.synthetic=[{synthetic or ''}]",
        f"--data.init_args.mixing={mixing}",
        f"--data.init_args.eval_split={split}",
        f"--trainer.default_root_dir={out / 'runs'}",
        f"--trainer.logger.init_args.save_dir={out}",
        f"--trainer.logger.init_args.name={name}-{split}",
        "--trainer.enable_checkpointing=false",
        "--trainer.callbacks=null",
        # The every-10-epochs validation on the eval split only draws W&B curves; the figures come from
        # the test pass after training. One batch of it is enough for a curve, and validation touches
        # neither the weights nor training's random draws, so the figures do not change (tested) while a
        # classifier run takes about half the time on a CPU.
        f"--trainer.limit_val_batches={PERIODIC_VALIDATION_BATCHES}",
    ]
    cli = train.cli_main([*classify_args, *extra])
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith(f"{split}/")}
    result = {
        "split": split,
        "mixing": mixing,
        "synthetic": synthetic,
        "metrics": metrics,
        "steps": cli.trainer.global_step,  # optimizer steps: what a mixing that lengthens epochs changes
        "settings": settings,
        "machine": machine_summary(),  # not a setting: a run reused on another machine is named in the report
    }
    confusion = cli.model.test_confusion
    if confusion is not None:
        confusion = confusion.tolist()
        per_class = accuracy_per_class_from_confusion(confusion)
        result["per_class_acc"] = dict(zip(cli.datamodule.class_names, per_class, strict=True))
        result["confusion"] = confusion
    result_file.parent.mkdir(parents=True, exist_ok=True)
    write_record(result_file, result)
    return metrics[key]


def result_path(
    out: Path, row: str, mixing: str, shots: int, seed: int, split: str, classifier_seed: int | None = None
) -> Path:
    """Where `classify` keeps one run's figures (a classifier seed other than the config's adds -cs<c>)."""
    name = f"{slug(row)}{'-synthetic-only' if mixing == SYNTHETIC_ONLY else ''}-{shots}shot-seed{seed}"
    if classifier_seed is not None:
        name += f"-cs{classifier_seed}"
    return out / "classifier" / split / f"{name}.json"


def finished_record(
    out: Path, row: str, mixing: str, shots: int, seed: int, split: str, classifier_seed: int | None = None
) -> dict:
    """A finished classifier run's record (`classify`'s result file); {} when the run has none."""
    path = result_path(out, row, mixing, shots, seed, split, classifier_seed)
    return read_record(path) if path.is_file() else {}


def per_class_of(
    out: Path, row: str, mixing: str, shots: int, seed: int, split: str, classifier_seed: int | None = None
) -> dict | None:
    """A finished run's accuracy per class ({class name: accuracy}); None for a run that did not keep
    it (made before the benchmark kept it)."""
    return finished_record(out, row, mixing, shots, seed, split, classifier_seed).get("per_class_acc")


def machine_of(
    out: Path, row: str, mixing: str, shots: int, seed: int, split: str, classifier_seed: int | None = None
) -> str | None:
    """The machine a finished run was measured on (`benchmarks.machine.machine_summary`); None for a run
    made before records kept it."""
    machine = finished_record(out, row, mixing, shots, seed, split, classifier_seed).get("machine")
    return machine if isinstance(machine, str) else None


def split_ratio_curve(out: Path, concepts: Path, extra: list[str], paper: bool = False) -> list[dict]:
    points = []
    for s in SPLIT_RATIOS:
        ratio_arg = f"--model.init_args.method.split_ratio={s}"
        info = make_set(out / "curve" / f"s{s}", "diffii", 5, 0, concepts, [ratio_arg, *extra], paper)
        points.append(
            {"split_ratio": s, "faithfulness": info["faithfulness"], "diversity": info["diversity"]}
        )
    return points


def run_row(
    out: Path, row: str, shots: int, seed: int, concepts: Path, args, split: str, both: bool, cseeds: list
) -> dict:
    """One row on one subset: its set (if any), then per classifier seed in `cseeds` (None: the
    config's) the classifier on real + set, and on the set alone when `both`; the accuracies are the
    means over those runs: {"acc", "per_class" (None when a run did not keep it), "synthetic_only"
    (None when not run), "set" (None for Original), "machines" (where each run was measured, None for a
    run made before records kept it)}."""
    method, mixing = ROWS[row], MIXING
    if method == CEILING_METHOD:
        info = make_ceiling_set(out, shots, seed, args.validation_per_class)
    else:
        paper = args.paper_denoising
        info = make_set(out, method, shots, seed, concepts, args.expand_args, paper) if method else None
    folder = info and info["folder"]
    accs, alone, per_class, machines = [], [], [], []
    for c in cseeds:
        accs.append(classify(out, row, folder, mixing, shots, seed, args.classifier_args, split, c))
        machines.append(machine_of(out, row, mixing, shots, seed, split, c))
        if both and info:
            alone.append(
                classify(out, row, folder, SYNTHETIC_ONLY, shots, seed, args.classifier_args, split, c)
            )
            machines.append(machine_of(out, row, SYNTHETIC_ONLY, shots, seed, split, c))
        per_class.append(per_class_of(out, row, mixing, shots, seed, split, c))
    return {
        "acc": statistics.mean(accs),
        "per_class": None if None in per_class else mean_per_class(per_class),
        "synthetic_only": statistics.mean(alone) if alone else None,
        "set": info,
        "machines": machines,
    }


def mean_per_class(runs: list[dict]) -> dict:
    """Per class, the mean accuracy over runs ({class: accuracy}); None where a run has None (a class
    the evaluation did not see)."""
    return {
        c: None if any(run[c] is None for run in runs) else statistics.mean(run[c] for run in runs)
        for c in runs[0]
    }


def check_validation_size(parser: argparse.ArgumentParser, args) -> None:
    """Refuse a validation size the run cannot honour, and hand a non-default one to every classifier
    run (through --classifier-args, so that a finished run of another size is never reused)."""
    per_class = args.validation_per_class
    # any spelling (--data.validation_per_class, a --data dict, ...): the ceiling sets must match it
    if any("validation_per_class" in a for a in args.classifier_args):
        parser.error(
            "give the validation split's size by --validation-per-class, not --classifier-args: the ceiling "
            "sets must be drawn outside the same split"
        )
    if per_class < 1:
        parser.error(f"--validation-per-class must be at least 1, got {per_class}")
    if per_class != VALIDATION_PER_CLASS and args.split != "validation":
        parser.error(
            "--validation-per-class only applies with --split validation (a test-split bench draws its "
            f"ceiling sets outside the default {VALIDATION_PER_CLASS} images per class, as every committed "
            "report did)"
        )
    if per_class != VALIDATION_PER_CLASS:
        from diffexpand.data.readers import read_dataset
        from diffexpand.data.subsets import validation_indices

        try:  # now, not after the first subset's concepts have been learned
            validation_indices(read_dataset("fashion_mnist", None, "train").labels, per_class)
        except ValueError as err:
            parser.error(f"--validation-per-class {per_class}: {err}")
        args.classifier_args = [*args.classifier_args, f"{VALIDATION_SIZE_ARG}{per_class}"]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--out", default=None, help="default: outputs/bench-<profile>")
    parser.add_argument(
        "--split",
        choices=SPLITS,
        default="test",
        help="what the classifiers are evaluated on: tune on validation, report test once (default: test)",
    )
    parser.add_argument(
        "--synthetic-only",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also train on each set alone (default: the profile's choice, on for full)",
    )
    # Repeatable, one setting each (--expand-args=--model.init_args.x=1 --expand-args=...): a value that
    # starts with "--" only reaches the list through "=", and a repeated flag must add, not replace.
    passthrough = {"nargs": "*", "action": "extend", "default": []}
    parser.add_argument("--concept-args", **passthrough, help="extra train.py args for concepts")
    parser.add_argument(
        "--concept-runs",
        type=int,
        default=1,
        help="learn each subset's concepts this many times and keep the run whose samples lie nearest "
        "to their class's few shots (tools/select_concepts.py's check; default 1: learn once)",
    )
    parser.add_argument("--expand-args", **passthrough, help="extra expand.py args for every set")
    parser.add_argument("--classifier-args", **passthrough, help="extra train.py args for classifiers")
    parser.add_argument("--rows", nargs="+", default=None, choices=list(ROWS), help="not the profile's")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="not the profile's")
    parser.add_argument("--shots", nargs="+", type=int, default=None, help="not the profile's")
    parser.add_argument(
        "--classifier-seeds",
        nargs="+",
        type=int,
        default=None,
        help="train each row's classifier once per seed (seed_everything) and report the mean per subset "
        "(default: once, with the config's seed)",
    )
    parser.add_argument(
        "--validation-per-class",
        type=int,
        default=VALIDATION_PER_CLASS,
        help="with --split validation: the validation split's images per class (default "
        f"{VALIDATION_PER_CLASS}); a larger split measures a small difference between settings with less "
        "noise, and the ceiling sets are drawn outside it",
    )
    parser.add_argument(
        "--paper-denoising",
        action="store_true",
        help="expand with each method's papers' solver and steps (configs/expand/paper/<method>.yaml)",
    )
    args = parser.parse_args(argv)
    if args.concept_runs < 1:
        parser.error("--concept-runs must be at least 1")
    check_validation_size(parser, args)
    cseeds: list = [None]  # the config's seed_everything: records made before classifier seeds match it
    if args.classifier_seeds is not None:
        if any(a.startswith("--seed_everything") for a in args.classifier_args):
            parser.error("give the classifier's seeds by --classifier-seeds or --classifier-args, not both")
        if len(set(args.classifier_seeds)) != len(args.classifier_seeds):
            parser.error(f"--classifier-seeds has a seed twice: {args.classifier_seeds}")
        # the config's own seed runs without the flag, so its records are those of a run without seeds
        own = classifier_config_seed()
        cseeds = [None if c == own else c for c in args.classifier_seeds]
    profile = dict(PROFILES[args.profile])
    for key in ("rows", "seeds", "shots"):
        if getattr(args, key) is not None:
            profile[key] = getattr(args, key)
    if args.synthetic_only is not None:
        profile["synthetic_only"] = args.synthetic_only
    profile["concept_runs"] = args.concept_runs
    profile["validation_per_class"] = args.validation_per_class
    profile["classifier_seeds"] = args.classifier_seeds
    profile["priors"] = priors_used(profile["rows"], args.concept_args, args.expand_args)
    out = Path(args.out or f"outputs/bench-{args.profile}")
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    results: dict[tuple[str, int], dict] = {}
    for shots in profile["shots"]:
        for seed in profile["seeds"]:
            concepts = chosen_concepts(out, shots, seed, args.concept_args, args.concept_runs)
            for row in profile["rows"]:
                both = profile["synthetic_only"]
                done = run_row(out, row, shots, seed, concepts, args, args.split, both, cseeds)
                entry = results.setdefault(
                    (row, shots),
                    {"acc": {}, "per_class": {}, "synthetic_only": {}, "sets": [], "machines": []},
                )
                entry["machines"] += done["machines"]
                entry["acc"][seed] = done["acc"]
                if done["per_class"] is not None:
                    entry["per_class"][seed] = done["per_class"]
                if done["synthetic_only"] is not None:
                    entry["synthetic_only"][seed] = done["synthetic_only"]
                if done["set"]:
                    entry["sets"].append(done["set"])
    curve = []
    if profile["curve"]:
        concepts = chosen_concepts(out, 5, 0, args.concept_args, args.concept_runs)
        curve = split_ratio_curve(out, concepts, args.expand_args, args.paper_denoising)
    report = write_report(out, profile, results, curve, time.time() - started, args.profile, args.split)
    print(report)
    return {"results": results, "curve": curve}


if __name__ == "__main__":
    from diffexpand.cli import run_with_clear_errors  # an error of ours as one line, not a traceback

    run_with_clear_errors(main)
