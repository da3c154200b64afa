"""The tiny benchmark: the Fashion-MNIST analogue of the Diff-II paper's Table 1, on the committed prior.

    python benchmarks/tiny_benchmark.py --profile quick     # make demo: 5-shot, seed 0, 6 rows
    python benchmarks/tiny_benchmark.py --profile full      # make bench: 5/10-shot x 3 seeds, 10 rows
    python benchmarks/tiny_benchmark.py --split validation  # tune on the validation split

For each n-shot subset and seed: the concepts are learned once (configs/concept.yaml) and serve every
method that needs them; each method expands the subset 5x (configs/expand/<method>.yaml); a classifier
(configs/classifier.yaml) trains on real + synthetic and is evaluated on `--split`: `test` (default, the
full test split: use it once, for the final table) or `validation` (carved from the training split,
disjoint from every few-shot subset with seed < 10 and shots <= 50: tune every setting on it).

Rows: Original (real only); the "Real x5" ceiling (as many *other real* training images as a method adds,
disjoint from the subset and the validation split, drawn by the subset's seed and written as a set, so
they take the classifier path and mixing of Diff-II's row); one row per method. Per row: mean ± std
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
import csv
import hashlib
import json
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from diffexpand.classification.metrics import accuracy_per_class_from_confusion  # noqa: E402
from diffexpand.classification.paired import (  # noqa: E402
    paired_gains,
    paired_gains_per_class,
    share_of_ceiling,
)

EXPANSION_DATA = REPO / "configs" / "expand" / "base" / "data.yaml"  # what every method config expands


def expansion_settings(path: Path = EXPANSION_DATA) -> tuple[float, int]:
    """(expansion ratio, image size) of the method configs' shared data settings."""
    init = (yaml.safe_load(path.read_text()) or {}).get("init_args", {})
    ratio, size = init.get("expansion_ratio"), (init.get("real") or {}).get("image_size")
    if not isinstance(ratio, int | float) or ratio <= 0 or not isinstance(size, int) or size < 1:
        raise ValueError(f"{path}: expected init_args.expansion_ratio > 0 and init_args.real.image_size, "
                         f"got {ratio!r} and {size!r}")  # fmt: skip
    return float(ratio), size


EXPANSION_RATIO, IMAGE_SIZE = expansion_settings()
CEILING = f"Real ×{EXPANSION_RATIO:g}"  # other real images, as many as a method adds
CEILING_METHOD = "real"  # its set folder: sets/real-<shots>shot-seed<seed>
DIFF_II_MIXING = "replace"
ROWS = {  # row label -> expansion method (None: real images only); mixing for the classifier
    "Original": (None, "replace"),
    CEILING: (CEILING_METHOD, DIFF_II_MIXING),  # through the classifier as Diff-II's set goes
    "txt2img": ("txt2img", "replace"),
    "Real-Guidance": ("real_guidance", "replace"),
    "DA-Fusion": ("dafusion", "replace"),
    "Diff-AUG": ("diffaug", "replace"),
    "Diff-Mix": ("diffmix", "replace"),
    "Diff-II": ("diffii", DIFF_II_MIXING),
    "DistDiff": ("distdiff", "concat"),  # DistDiff trains on the concatenation (its paper)
    # a Diff-II set with guidance, mixed as Diff-II's: its paired difference to Diff-II is the guidance
    "Diff-II+DistDiff": ("diffii_distdiff", DIFF_II_MIXING),
}
SYNTHETIC_ONLY = "synthetic_only"  # the classifier's mixing that trains on a set alone
# The synthetic-only column costs one more classifier run per row and seed: full profile only, which
# keeps `make demo` within its 15 minutes on 2 cores.
PROFILES = {
    "quick": {
        "shots": [5],
        "seeds": [0],
        "rows": ["Original", CEILING, "txt2img", "Diff-II", "DistDiff", "Diff-II+DistDiff"],
        "curve": False,
        "synthetic_only": False,
    },
    "full": {"shots": [5, 10], "seeds": [0, 1, 2], "rows": list(ROWS), "curve": True, "synthetic_only": True},
}
SPLITS = ("test", "validation")
SPLIT_RATIOS = [0.0, 0.1, 0.3, 0.5, 0.7, 1.0]


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


COMMITTED_CONCEPTS = REPO / "assets" / "concepts"


def ensure_concepts(out: Path, shots: int, seed: int, extra: list[str]) -> Path:
    """The concept folder of a subset: the committed one when it exists (5-shot seed 0, made by
    configs/concept.yaml), else learned once under --out."""
    import train

    committed = COMMITTED_CONCEPTS / f"fashion_mnist-{shots}shot-seed{seed}"
    if not extra and (committed / "concepts.json").is_file():
        return committed
    folder = out / "concepts" / f"{shots}shot-seed{seed}"
    record = folder.with_name(f"{folder.name}.bench.json")  # beside the folder: it stays a concept folder
    config = REPO / "configs/concept.yaml"
    settings = {
        "extra": list(extra),
        "inputs": inputs_digest(config),
        "prior": prior_fingerprint(config, extra),
    }
    if (folder / "concepts.json").is_file():
        if record.is_file():
            reused(record, settings)
    else:
        say(f"learning concepts for {shots}-shot seed {seed}")
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
        record.write_text(json.dumps({"settings": settings}, indent=1) + "\n")
    return folder


def inputs_digest(*paths: Path) -> str:
    """A digest of the files a stage reads (config files, a concept folder, a set's images), so a stage
    made from other versions of them is not taken for this one. A folder counts with every file in it
    (by relative name and content); a path that does not exist counts as absent."""
    digest = hashlib.sha256()
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            name = file.relative_to(path) if path.is_dir() else file.name
            content = hashlib.sha256(file.read_bytes()).digest() if file.is_file() else b"absent"
            digest.update(f"{name}\0".encode() + content)
    return digest.hexdigest()[:16]


def set_inputs(folder: Path) -> list[Path]:
    """What a classifier reads of a set: its records and images (not the figures written beside them)."""
    return [folder / "metadata.jsonl", folder / "images"]


# What a record keeps besides its extra settings, each added later than the one before: a record made
# before a key existed lacks it and is reused unchecked on that point, with a note.
DIGESTS = {"inputs": "a digest of their input files", "prior": "the fingerprint of the prior they loaded"}


def _without(settings: dict, keys) -> dict:
    return {k: v for k, v in settings.items() if k not in keys}


def reused(record: Path, settings: dict) -> dict:
    """A finished stage's record, if it was made with these extra settings, from the same input files and
    on the same prior. Stages are found by name, so a rerun into the same --out with other
    --concept-args / --expand-args / --classifier-args, or after a config file, the concepts, a set or
    the prior changed, would otherwise report the old concepts, set or accuracy as the new one's. (A
    record without settings predates them; one without a digest key predates that key: each taken as
    far as it goes, the latter with a note.)"""
    done = json.loads(record.read_text())
    made = done.get("settings", settings)
    unchecked = [key for key in DIGESTS if key in settings and key not in made]
    wanted = _without(settings, unchecked)
    if made != wanted:
        what = "other input files (a config, the concepts or a set changed since)"
        if made.get("prior") != wanted.get("prior"):
            what = f"another prior ({made.get('prior')}, now {wanted.get('prior')})"
        if _without(made, DIGESTS) != _without(wanted, DIGESTS):
            what = f"other settings ({_without(made, DIGESTS)}, now {_without(wanted, DIGESTS)})"
        raise ValueError(
            f"{record} was made with {what}: give this run another --out, or delete that stage to remake it"
        )
    if unchecked:
        kept = " or ".join(DIGESTS[key] for key in unchecked)
        say(f"reusing {record}, made before stages kept {kept}: not checked against them")
    return done


PRIOR_FLAGS = ("--model.init_args.pretrained", "--model.pretrained")


def prior_of(config: Path, extra: list[str]) -> str:
    """The prior a concept or expansion run loads: the last pretrained setting among its extra arguments
    (as jsonargparse takes the last), else its config's, else the default prior."""
    from diffexpand.paths import DEFAULT_PRIOR

    for i in reversed(range(len(extra))):
        flag, given, value = extra[i].partition("=")
        if flag in PRIOR_FLAGS and (given or i + 1 < len(extra)):
            return value if given else extra[i + 1]
    model = (yaml.safe_load(config.read_text()) or {}).get("model") or {}
    return str((model.get("init_args") or {}).get("pretrained") or model.get("pretrained") or DEFAULT_PRIOR)


def prior_fingerprint(config: Path, extra: list[str]) -> str:
    """The content fingerprint of that prior (its configs, tokenizer and weights), so concepts and sets
    made on an earlier prior (before `make prior` rewrote it, say) are not taken for this one's."""
    from diffexpand.models.identity import model_identity
    from diffexpand.paths import in_repo

    source = prior_of(config, extra)
    identity = model_identity(in_repo(source) or source)
    return identity.fingerprint if identity else f"not on this machine: {source}"


def uses_concepts(config: Path) -> bool:
    """Whether a method config takes a concept folder (the benchmark then passes the subset's)."""
    return "concepts:" in config.read_text()


def set_settings(method: str, concepts: Path, extra: list[str], paper: bool = False) -> dict:
    """What a set is made from: the extra settings, the solver choice, and a digest of the method's config
    files and (for a method that uses them) the concept folder."""
    from diffexpand.paths import paper_preset

    config = REPO / "configs" / "expand" / f"{method}.yaml"
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
        return reused(info_file, settings)
    say(f"expanding with {method} ({shots}-shot seed {seed})")
    config = REPO / "configs" / "expand" / f"{method}.yaml"
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
    info_file.write_text(json.dumps(info, indent=1) + "\n")
    return info


def make_ceiling_set(out: Path, shots: int, seed: int) -> dict:
    """The "Real xN" set of a subset (or the one already written): EXPANSION_RATIO x shots real training
    images per class, outside the subset and the validation split, drawn by the subset's seed; returns
    its folder and oracle metrics, like `make_set`."""
    from diffexpand.data.readers import read_dataset
    from diffexpand.data.real_set import write_real_set
    from diffexpand.data.subsets import ceiling_indices, expanded_count, few_shot_indices, validation_indices
    from diffexpand.evaluation.synthetic_quality import evaluate_set
    from diffexpand.oracle_cnn import OracleCNN
    from diffexpand.paths import DEFAULT_ORACLE

    folder = out / "sets" / f"{CEILING_METHOD}-{shots}shot-seed{seed}"
    info_file = folder / "bench.json"
    if info_file.is_file():
        return json.loads(info_file.read_text())
    say(f"writing the {CEILING} set ({shots}-shot seed {seed})")
    data = read_dataset("fashion_mnist", None, "train")
    subset = few_shot_indices(data.labels, shots, seed)  # the classifier's real subset (classifier.yaml)
    chosen = ceiling_indices(
        data.labels,
        subset,
        per_class=expanded_count(shots, EXPANSION_RATIO),  # what a method adds per class
        seed=seed,
        excluded=validation_indices(data.labels),
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
    info_file.write_text(json.dumps(info, indent=1) + "\n")
    return info


def slug(row: str) -> str:
    """A row label as a file-name part ("Real ×5" -> "Real-5")."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", row).strip("-")


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
) -> float:
    """Train the classifier on the subset (+ the set, mixed by `mixing`) and evaluate it on `split`;
    its accuracy there. The result file names the split and the mixing, so figures never mix; it also
    keeps the accuracy per class and the confusion matrix (rows: true class)."""
    import train

    result_file = result_path(out, row, mixing, shots, seed, split)
    name = result_file.stem
    key = f"{split}/acc"  # the classifier names its final figures after the split
    settings = classifier_settings(synthetic, extra)
    if result_file.is_file():
        return reused(result_file, settings)["metrics"][key]
    say(f"training the classifier: {row}{' (set only)' if mixing == SYNTHETIC_ONLY else ''} "
        f"({shots}-shot seed {seed}, evaluated on {split})")  # fmt: skip
    classify_args = [
        "fit",
        "--config",
        str(REPO / "configs/classifier.yaml"),
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
    ]
    cli = train.cli_main([*classify_args, *extra])
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith(f"{split}/")}
    result = {
        "split": split,
        "mixing": mixing,
        "synthetic": synthetic,
        "metrics": metrics,
        "settings": settings,
    }
    confusion = cli.model.test_confusion
    if confusion is not None:
        confusion = confusion.tolist()
        per_class = accuracy_per_class_from_confusion(confusion)
        result["per_class_acc"] = dict(zip(cli.datamodule.class_names, per_class, strict=True))
        result["confusion"] = confusion
    result_file.parent.mkdir(parents=True, exist_ok=True)
    result_file.write_text(json.dumps(result, indent=1) + "\n")
    return metrics[key]


def result_path(out: Path, row: str, mixing: str, shots: int, seed: int, split: str) -> Path:
    """Where `classify` keeps one run's figures."""
    name = f"{slug(row)}{'-synthetic-only' if mixing == SYNTHETIC_ONLY else ''}-{shots}shot-seed{seed}"
    return out / "classifier" / split / f"{name}.json"


def per_class_of(out: Path, row: str, mixing: str, shots: int, seed: int, split: str) -> dict | None:
    """A finished run's accuracy per class ({class name: accuracy}); None for a run that did not keep
    it (made before the benchmark kept it)."""
    path = result_path(out, row, mixing, shots, seed, split)
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("per_class_acc")


def split_ratio_curve(out: Path, concepts: Path, extra: list[str], paper: bool = False) -> list[dict]:
    points = []
    for s in SPLIT_RATIOS:
        ratio_arg = f"--model.init_args.method.split_ratio={s}"
        info = make_set(out / "curve" / f"s{s}", "diffii", 5, 0, concepts, [ratio_arg, *extra], paper)
        points.append(
            {"split_ratio": s, "faithfulness": info["faithfulness"], "diversity": info["diversity"]}
        )
    return points


def plot_curve(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    ax.plot([p["diversity"] for p in points], [p["faithfulness"] for p in points], "o-")
    for p in points:
        ax.annotate(
            f"s={p['split_ratio']}",
            (p["diversity"], p["faithfulness"]),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=8,
        )
    ax.set_xlabel("diversity (mean pairwise oracle-feature distance)")
    ax.set_ylabel("faithfulness (oracle accuracy)")
    ax.set_title("Diff-II split ratio, 5-shot seed 0")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def mean_std(values) -> str:
    """Accuracies (fractions) as "mean ± std" in percent; one value alone."""
    values = list(values)
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def gain_text(paired) -> str:
    """A paired gain in points, signed: "+4.00 ± 1.00" (one seed: "+4.00")."""
    text = f"{100 * paired.mean:+.2f}"
    return text if paired.std is None else f"{text} ± {100 * paired.std:.2f}"


def run_row(out: Path, row: str, shots: int, seed: int, concepts: Path, args, split: str, both: bool) -> dict:
    """One row on one subset: its set (if any), the classifier on real + set, and on the set alone
    when `both`; {"acc", "per_class" (None when not kept), "synthetic_only" (None when not run), "set"
    (None for Original)}."""
    method, mixing = ROWS[row]
    if method == CEILING_METHOD:
        info = make_ceiling_set(out, shots, seed)
    else:
        paper = args.paper_denoising
        info = make_set(out, method, shots, seed, concepts, args.expand_args, paper) if method else None
    folder = info and info["folder"]
    acc = classify(out, row, folder, mixing, shots, seed, args.classifier_args, split)
    alone = None
    if both and info:
        alone = classify(out, row, folder, SYNTHETIC_ONLY, shots, seed, args.classifier_args, split)
    per_class = per_class_of(out, row, mixing, shots, seed, split)
    return {"acc": acc, "per_class": per_class, "synthetic_only": alone, "set": info}


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
    parser.add_argument("--expand-args", **passthrough, help="extra expand.py args for every set")
    parser.add_argument("--classifier-args", **passthrough, help="extra train.py args for classifiers")
    parser.add_argument("--rows", nargs="+", default=None, choices=list(ROWS), help="not the profile's")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="not the profile's")
    parser.add_argument("--shots", nargs="+", type=int, default=None, help="not the profile's")
    parser.add_argument(
        "--paper-denoising",
        action="store_true",
        help="expand with each method's papers' solver and steps (configs/expand/paper/<method>.yaml)",
    )
    args = parser.parse_args(argv)
    profile = dict(PROFILES[args.profile])
    for key in ("rows", "seeds", "shots"):
        if getattr(args, key) is not None:
            profile[key] = getattr(args, key)
    if args.synthetic_only is not None:
        profile["synthetic_only"] = args.synthetic_only
    out = Path(args.out or f"outputs/bench-{args.profile}")
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    results: dict[tuple[str, int], dict] = {}
    for shots in profile["shots"]:
        for seed in profile["seeds"]:
            concepts = ensure_concepts(out, shots, seed, args.concept_args)
            for row in profile["rows"]:
                done = run_row(out, row, shots, seed, concepts, args, args.split, profile["synthetic_only"])
                entry = results.setdefault(
                    (row, shots), {"acc": {}, "per_class": {}, "synthetic_only": {}, "sets": []}
                )
                entry["acc"][seed] = done["acc"]
                if done["per_class"] is not None:
                    entry["per_class"][seed] = done["per_class"]
                if done["synthetic_only"] is not None:
                    entry["synthetic_only"][seed] = done["synthetic_only"]
                if done["set"]:
                    entry["sets"].append(done["set"])
    curve = []
    if profile["curve"]:
        concepts = ensure_concepts(out, 5, 0, args.concept_args)
        curve = split_ratio_curve(out, concepts, args.expand_args, args.paper_denoising)
    report = write_report(out, profile, results, curve, time.time() - started, args.profile, args.split)
    print(report)
    return {"results": results, "curve": curve}


def _mean_of(sets: list[dict], key: str) -> float | None:
    """The mean of a set figure over seeds; None when no set has it (Original; images/s of the ceiling)."""
    values = [s[key] for s in sets if s.get(key) is not None]
    return statistics.mean(values) if values else None


def summarize(results: dict, profile: dict, shots: int) -> list[dict]:
    """Per row of one shot count: accuracies, paired gains against Original, share of the ceiling's
    gain, per-class paired gains (when every run of the row and Original kept them), synthetic-only
    accuracies and the sets' figures."""
    original = results[("Original", shots)]["acc"]
    original_per_class = results[("Original", shots)].get("per_class") or {}
    ceiling = results.get((CEILING, shots))
    ceiling_gain = paired_gains(ceiling["acc"], original).mean if ceiling else None
    summary = []
    for row in profile["rows"]:
        entry = results[(row, shots)]
        paired = None if row == "Original" else paired_gains(entry["acc"], original)
        share = None
        if paired is not None and ceiling_gain is not None:
            share = share_of_ceiling(paired.mean, ceiling_gain)
        sets = entry["sets"]
        per_class = entry.get("per_class") or {}
        per_class_gain = None
        if paired is not None and set(per_class) == set(original_per_class) == set(entry["acc"]):
            per_class_gain = paired_gains_per_class(per_class, original_per_class)
        summary.append(
            {
                "row": row,
                "acc": entry["acc"],
                "paired": paired,
                "per_class_gain": per_class_gain,
                "share": share,
                "synthetic_only": entry.get("synthetic_only") or {},
                "faithfulness": _mean_of(sets, "faithfulness"),
                "diversity": _mean_of(sets, "diversity"),
                "images_per_s": _mean_of(sets, "images_per_s"),
            }
        )
    return summary


def _cell(value, fmt: str) -> str:
    return format(value, fmt) if value is not None else "—"


def table_lines(summary: list[dict], with_synthetic_only: bool) -> list[str]:
    head = "| method | accuracy % | paired gain | wins | % of ceiling |"
    rule = "|---|---|---|---|---|"
    if with_synthetic_only:
        head, rule = head + " synthetic only % |", rule + "---|"
    lines = [head + " faithfulness | diversity | images/s |", rule + "---|---|---|"]
    for s in summary:
        paired = s["paired"]
        cells = [
            s["row"],
            mean_std(s["acc"].values()),
            gain_text(paired) if paired else "—",
            f"{paired.wins}/{paired.seeds}" if paired else "—",
            f"{100 * s['share']:.0f}%" if s["share"] is not None else "—",
        ]
        if with_synthetic_only:
            cells.append(mean_std(s["synthetic_only"].values()) if s["synthetic_only"] else "—")
        cells += [
            _cell(s["faithfulness"], ".3f"),
            _cell(s["diversity"], ".3f"),
            _cell(s["images_per_s"], ".2f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def per_class_lines(summary: list[dict]) -> list[str]:
    """The per-class paired gains as a table (one column per class); none when no row has them."""
    rows = [s for s in summary if s["per_class_gain"]]
    if not rows:
        return []
    classes = list(rows[0]["per_class_gain"])
    lines = [
        "Paired gain per class, points (mean over seeds of the row's accuracy on the class − Original's):",
        "",
        "| method | " + " | ".join(classes) + " |",
        "|---|" + "---|" * len(classes),
    ]
    for s in rows:
        cells = [_cell(None if g is None else 100 * g, "+.1f") for g in s["per_class_gain"].values()]
        lines.append(f"| {s['row']} | " + " | ".join(cells) + " |")
    return lines + [""]


def per_class_csv_rows(summary: list[dict], shots: int, split: str) -> list[dict]:
    return [
        {"shots": shots, "method": s["row"], "split": split, "class": c, "gain": gain}
        for s in summary
        if s["per_class_gain"]
        for c, gain in s["per_class_gain"].items()
    ]


def csv_rows(summary: list[dict], shots: int, split: str) -> list[dict]:
    rows = []
    for s in summary:
        acc, paired, alone = list(s["acc"].values()), s["paired"], list(s["synthetic_only"].values())
        rows.append(
            {
                "shots": shots,
                "method": s["row"],
                "split": split,
                "acc_mean": statistics.mean(acc),
                "acc_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                "gain": paired.mean if paired else 0.0,  # paired: mean over seeds of (acc − Original)
                "gain_std": (paired.std or 0.0) if paired else 0.0,
                "wins": paired.wins if paired else None,
                "seeds": len(acc),
                "share_of_ceiling": s["share"],
                "synthetic_only_mean": statistics.mean(alone) if alone else None,
                "synthetic_only_std": statistics.stdev(alone) if len(alone) > 1 else None,
                "faithfulness": s["faithfulness"],
                "diversity": s["diversity"],
                "images_per_s": s["images_per_s"],
            }
        )
    return rows


def per_seed_rows(summary: list[dict], shots: int, split: str) -> list[dict]:
    rows = []
    for s in summary:
        for seed, acc in s["acc"].items():
            rows.append(
                {
                    "shots": shots,
                    "seed": seed,
                    "method": s["row"],
                    "split": split,
                    "acc": acc,
                    "gain": s["paired"].gains[seed] if s["paired"] else 0.0,
                    "synthetic_only_acc": s["synthetic_only"].get(seed),
                }
            )
    return rows


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def split_sentence(split: str) -> str:
    """What the report's accuracies were measured on, and what that split is for."""
    if split == "validation":
        from diffexpand.data.subsets import RESERVED_SEEDS, RESERVED_SHOTS, VALIDATION_PER_CLASS

        return (
            f"**Split: validation** — {VALIDATION_PER_CLASS} training images per class that no few-shot "
            f"subset with seed < {RESERVED_SEEDS} and shots ≤ {RESERVED_SHOTS} selects (disjoint from the "
            "subsets, the ceiling sets and the test split). Every setting is chosen on this split; the "
            "final table is the one run with `--split test`."
        )
    return (
        "**Split: test** — the full 10k test split, used once, for the final table; every setting is "
        "chosen on the validation split (`--split validation`)."
    )


def write_report(
    out: Path, profile: dict, results: dict, curve: list[dict], seconds: float, name: str, split: str = "test"
) -> str:
    import platform

    import torch

    with_synthetic_only = bool(profile.get("synthetic_only"))
    rows_csv, seed_csv, class_csv, lines = [], [], [], []
    for shots in profile["shots"]:
        seeds = len(profile["seeds"])
        summary = summarize(results, profile, shots)
        lines += [f"### {shots}-shot ({seeds} seed{'s' if seeds > 1 else ''})", ""]
        lines += table_lines(summary, with_synthetic_only) + [""]
        lines += per_class_lines(summary)
        rows_csv += csv_rows(summary, shots, split)
        seed_csv += per_seed_rows(summary, shots, split)
        class_csv += per_class_csv_rows(summary, shots, split)
    suffix = "" if split == "test" else f"-{split}"  # a tuning run never overwrites the final table
    write_csv(out / f"results{suffix}.csv", rows_csv)
    write_csv(out / f"results_per_seed{suffix}.csv", seed_csv)
    if class_csv:
        write_csv(out / f"results_per_class{suffix}.csv", class_csv)
    grids = []
    for row in profile["rows"]:
        method = ROWS[row][0]
        sheet = out / "sets" / f"{method}-{profile['shots'][0]}shot-seed{profile['seeds'][0]}" / "preview.png"
        if method and sheet.is_file():
            target = out / "grids" / f"{method}.png"
            target.parent.mkdir(exist_ok=True)
            shutil.copy(sheet, target)
            grids.append(f"![{row}](grids/{method}.png)")
    if curve:
        plot_curve(curve, out / "split_ratio.png")
    alone = (
        "Synthetic only = the classifier trained on the set alone (every real sample replaced, no real "
        f"image in training), evaluated on real images; for {CEILING} it is the other real images alone."
        if with_synthetic_only
        else "Synthetic-only accuracies (training on a set alone) are measured in the full profile only "
        "(one more classifier run per row and seed)."
    )
    header = [
        f"# Tiny benchmark ({name} profile, {split} split)",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M')} on {platform.node()} "
        f"({platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}); wall time {seconds / 60:.1f} min.",
        "",
        split_sentence(split),
        "",
        f"Fashion-MNIST n-shot subsets on the committed tiny prior, expansion {EXPANSION_RATIO:g}x, "
        "classifier configs/classifier.yaml, accuracy at the last epoch (mean ± std over seeds). "
        f"{CEILING} = the ceiling: {EXPANSION_RATIO:g} x shots other real training images per class "
        "(disjoint from the subset and the validation split, drawn by the subset's seed), mixed in as "
        "Diff-II's set is. Paired gain = accuracy − Original's on the same subset seed, in points, mean ± "
        "std over seeds; wins = seeds where the row beats Original; % of ceiling = paired gain / the "
        f"ceiling's paired gain (— when the ceiling gains nothing). {alone} Faithfulness = oracle accuracy "
        "of the set's images, diversity = mean pairwise oracle-feature distance within a class; images/s "
        "= generation on this machine.",
        "",
    ]
    body = header + lines
    if curve:
        body += [
            "## Diff-II split ratio (5-shot, seed 0)",
            "",
            "![split ratio](split_ratio.png)",
            "",
            "| s | faithfulness | diversity |",
            "|---|---|---|",
        ]
        body += [
            f"| {p['split_ratio']} | {p['faithfulness']:.3f} | {p['diversity']:.3f} |" for p in curve
        ] + [""]
    if grids:
        body += ["## Samples (one row per class)", "", *grids, ""]
    text = "\n".join(body)
    (out / f"report{suffix}.md").write_text(text)
    return text


if __name__ == "__main__":
    main()
