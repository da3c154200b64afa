"""The tiny benchmark: the Fashion-MNIST analogue of the Diff-II paper's Table 1, on the committed prior.

    python benchmarks/tiny_benchmark.py --profile quick     # make demo: 5-shot, seed 0, 4 rows
    python benchmarks/tiny_benchmark.py --profile full      # make bench: 5/10-shot x 3 seeds, 8 rows

For each n-shot subset and seed: the concepts are learned once (configs/concept.yaml) and serve every
method that needs them; each method expands the subset 5x (configs/expand/<method>.yaml); a classifier
(configs/classifier.yaml) trains on real + synthetic and is tested on the full test split. The table
gives mean ± std test accuracy over seeds, the gain over Original (real only), the oracle faithfulness
and diversity of the synthetic set, and generation images/s. The full profile adds the Diff-II split
ratio curve (faithfulness vs diversity as s goes from 0 to 1). Everything is written under --out:
report.md, results.csv, per-class grids, the plot, W&B offline runs. Finished stages are reused.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ROWS = {  # row label -> expansion method (None: real images only); mixing for the classifier
    "Original": (None, "replace"),
    "txt2img": ("txt2img", "replace"),
    "Real-Guidance": ("real_guidance", "replace"),
    "DA-Fusion": ("dafusion", "replace"),
    "Diff-AUG": ("diffaug", "replace"),
    "Diff-Mix": ("diffmix", "replace"),
    "Diff-II": ("diffii", "replace"),
    "DistDiff": ("distdiff", "concat"),  # DistDiff trains on the concatenation (its paper)
}
PROFILES = {
    "quick": {
        "shots": [5],
        "seeds": [0],
        "rows": ["Original", "txt2img", "Diff-II", "DistDiff"],
        "curve": False,
    },
    "full": {"shots": [5, 10], "seeds": [0, 1, 2], "rows": list(ROWS), "curve": True},
}
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
    if not (folder / "concepts.json").is_file():
        say(f"learning concepts for {shots}-shot seed {seed}")
        concept_args = [
            "fit",
            "--config",
            str(REPO / "configs/concept.yaml"),
            f"--data.init_args.shots={shots}",
            f"--data.init_args.seed={seed}",
            f"--model.init_args.output_dir={folder}",
            f"--trainer.default_root_dir={out / 'runs' / folder.name}",
            "--trainer.logger=false",
            "--trainer.callbacks=null",
            "--trainer.enable_checkpointing=false",
        ]
        train.cli_main([*concept_args, *extra])
    return folder


def make_set(out: Path, method: str, shots: int, seed: int, concepts: Path, extra: list[str]) -> dict:
    """Expand (or reuse) one synthetic set; returns its folder, generation images/s and oracle metrics."""
    import expand
    from diffexpand.evaluation.synthetic_quality import evaluate_set
    from diffexpand.oracle_cnn import OracleCNN
    from diffexpand.paths import DEFAULT_ORACLE

    folder = out / "sets" / f"{method}-{shots}shot-seed{seed}"
    info_file = folder / "bench.json"
    if info_file.is_file():
        return json.loads(info_file.read_text())
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
    if "concepts:" in config.read_text():
        args.append(f"--model.init_args.concepts={concepts}")
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
    }
    info_file.write_text(json.dumps(info, indent=1) + "\n")
    return info


def classify(
    out: Path, row: str, synthetic: str | None, mixing: str, shots: int, seed: int, extra: list[str]
) -> float:
    import train

    result_file = out / "classifier" / f"{row}-{shots}shot-seed{seed}.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())["test/acc"]
    say(f"training the classifier: {row} ({shots}-shot seed {seed})")
    classify_args = [
        "fit",
        "--config",
        str(REPO / "configs/classifier.yaml"),
        f"--data.init_args.real.shots={shots}",
        f"--data.init_args.real.seed={seed}",
        f"--data.init_args.synthetic=[{synthetic or ''}]",
        f"--data.init_args.mixing={mixing}",
        f"--trainer.default_root_dir={out / 'runs'}",
        f"--trainer.logger.init_args.save_dir={out}",
        f"--trainer.logger.init_args.name={row}-{shots}shot-seed{seed}",
        "--trainer.enable_checkpointing=false",
        "--trainer.callbacks=null",
    ]
    cli = train.cli_main([*classify_args, *extra])
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("test/")}
    result_file.parent.mkdir(parents=True, exist_ok=True)
    result_file.write_text(json.dumps(metrics, indent=1) + "\n")
    return metrics["test/acc"]


def split_ratio_curve(out: Path, concepts: Path, extra: list[str]) -> list[dict]:
    points = []
    for s in SPLIT_RATIOS:
        ratio_arg = f"--model.init_args.method.split_ratio={s}"
        info = make_set(out / "curve" / f"s{s}", "diffii", 5, 0, concepts, [ratio_arg, *extra])
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


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--out", default=None, help="default: outputs/bench-<profile>")
    parser.add_argument("--concept-args", nargs="*", default=[], help="extra train.py args for concepts")
    parser.add_argument("--expand-args", nargs="*", default=[], help="extra expand.py args for every set")
    parser.add_argument(
        "--classifier-args", nargs="*", default=[], help="extra train.py args for classifiers"
    )
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    out = Path(args.out or f"outputs/bench-{args.profile}")
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    results: dict[tuple[str, int], dict] = {}
    for shots in profile["shots"]:
        for seed in profile["seeds"]:
            concepts = ensure_concepts(out, shots, seed, args.concept_args)
            for row in profile["rows"]:
                method, mixing = ROWS[row]
                info = make_set(out, method, shots, seed, concepts, args.expand_args) if method else None
                acc = classify(out, row, info and info["folder"], mixing, shots, seed, args.classifier_args)
                entry = results.setdefault((row, shots), {"acc": [], "sets": []})
                entry["acc"].append(acc)
                if info:
                    entry["sets"].append(info)
    curve = []
    if profile["curve"]:
        curve = split_ratio_curve(out, ensure_concepts(out, 5, 0, args.concept_args), args.expand_args)
    report = write_report(out, profile, results, curve, time.time() - started, args.profile)
    print(report)
    return {"results": results, "curve": curve}


def write_report(
    out: Path, profile: dict, results: dict, curve: list[dict], seconds: float, name: str
) -> str:
    import platform

    import torch

    rows_csv, lines = [], []
    for shots in profile["shots"]:
        original = statistics.mean(results[("Original", shots)]["acc"])
        seeds = len(profile["seeds"])
        lines += [
            f"### {shots}-shot ({seeds} seed{'s' if seeds > 1 else ''})",
            "",
            "| method | accuracy % | gain | faithfulness | diversity | images/s |",
            "|---|---|---|---|---|---|",
        ]
        for row in profile["rows"]:
            entry = results[(row, shots)]
            acc, sets = entry["acc"], entry["sets"]
            gain = 100 * (statistics.mean(acc) - original)
            faith = statistics.mean(s["faithfulness"] for s in sets) if sets else None
            div = statistics.mean(s["diversity"] for s in sets) if sets else None
            speed = statistics.mean(s["images_per_s"] for s in sets) if sets else None

            def cell(value, fmt):
                return format(value, fmt) if value is not None else "—"

            lines.append(
                f"| {row} | {mean_std(acc)} | {'—' if row == 'Original' else f'{gain:+.2f}'} | "
                f"{cell(faith, '.3f')} | {cell(div, '.3f')} | {cell(speed, '.2f')} |"
            )
            rows_csv.append(
                {
                    "shots": shots,
                    "method": row,
                    "acc_mean": statistics.mean(acc),
                    "acc_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                    "gain": gain / 100,
                    "faithfulness": faith,
                    "diversity": div,
                    "images_per_s": speed,
                    "seeds": len(acc),
                }
            )
        lines.append("")
    with (out / "results.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows_csv[0]))
        writer.writeheader()
        writer.writerows(rows_csv)
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
    header = [
        f"# Tiny benchmark ({name} profile)",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M')} on {platform.node()} "
        f"({platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}); wall time {seconds / 60:.1f} min.",
        "Fashion-MNIST n-shot subsets on the committed tiny prior, expansion 5x, classifier "
        "configs/classifier.yaml, accuracy on the full 10k test split at the last epoch (mean ± std over "
        "seeds). Faithfulness = oracle accuracy of the synthetic images, diversity = mean pairwise "
        "oracle-feature distance within a class; images/s = generation on this machine.",
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
        body += ["## Synthetic samples (one row per class)", "", *grids, ""]
    text = "\n".join(body)
    (out / "report.md").write_text(text)
    return text


if __name__ == "__main__":
    main()
