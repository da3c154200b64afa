"""The tiny benchmark's report: per shot count, each row's accuracy, paired gain over Original, wins,
share of the ceiling's gain, synthetic-only accuracy and set figures; the per-class gains; the CSV
files; the split-ratio plot; the sample grids (report.md under --out)."""

from __future__ import annotations

import csv
import shutil
import statistics
import time
from collections import Counter
from pathlib import Path

from benchmarks.bench_protocol import CEILING, EXPANSION_RATIO, ROWS
from benchmarks.machine import machine_summary
from diffexpand.classification.paired import paired_gains, paired_gains_per_class, share_of_ceiling


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
    """The per-class paired gains as a table (one column per class), and which rows lack them (a run of
    theirs or of Original's did not keep its accuracy per class: made before the benchmark kept it)."""
    rows = [s for s in summary if s["per_class_gain"]]
    lacking = [s["row"] for s in summary if s["paired"] is not None and not s["per_class_gain"]]
    note = []
    if lacking:
        note = [
            f"No per-class gains for {', '.join(lacking)}: a run of theirs or of Original's predates "
            "per-class records (delete those classifier/ records and rerun to fill them in).",
            "",
        ]
    if not rows:
        return note
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
    return lines + [""] + note


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


def split_sentence(split: str, validation_per_class: int | None = None) -> str:
    """What the report's accuracies were measured on, and what that split is for (`validation_per_class`:
    the validation split's size, None for the default)."""
    if split == "validation":
        from diffexpand.data.subsets import RESERVED_SEEDS, RESERVED_SHOTS, VALIDATION_PER_CLASS

        per_class = validation_per_class or VALIDATION_PER_CLASS
        return (
            f"**Split: validation** — {per_class} training images per class that no few-shot "
            f"subset with seed < {RESERVED_SEEDS} and shots ≤ {RESERVED_SHOTS} selects (disjoint from the "
            "subsets, the ceiling sets and the test split). Every setting is chosen on this split; the "
            "final table is the one run with `--split test`."
        )
    return (
        "**Split: test** — the full 10k test split, used once, for the final table; every setting is "
        "chosen on the validation split (`--split validation`)."
    )


UNRECORDED = "not recorded (runs made before records kept the machine)"


def machine_lines(results: dict, here: str) -> list[str]:
    """Where the report's classifier runs were measured (`here`: this machine), and a warning when they
    come from more than one machine: reruns into an --out reuse finished runs, perhaps made on another
    machine, and the same run can end at another accuracy there, so a paired gain mixing them would
    carry the machines' difference as if it were the set's."""
    counts = Counter(m or UNRECORDED for entry in results.values() for m in entry.get("machines", []))
    if not counts:
        return []
    total = sum(counts.values())
    if list(counts) == [here]:
        return [f"Classifier runs: all {total} measured on this machine.", ""]

    def name(machine: str) -> str:
        return f"this machine ({machine})" if machine == here else machine

    listed = "; ".join(f"{name(m)}: {n}" for m, n in counts.most_common())
    lines = [f"Classifier runs by machine ({total} in all): {listed}."]
    if len(counts) > 1:
        lines.append(
            "**These runs mix machines.** The same classifier run, with the same seed, can end at another "
            "accuracy on another machine (its kernels round differently, and training amplifies it; "
            "docs/measurements/2026-12-06-classifier-machine.md), so a paired gain is sound only between "
            "runs of one machine. To compare on this one, delete the other runs' records under "
            "classifier/ in this --out and run the benchmark again."
        )
    return [*lines, ""]


def prior_phrase(priors: list[str] | None) -> str:
    """What the report says its concepts and sets were made on: the committed prior, or the ones named."""
    from diffexpand.paths import DEFAULT_PRIOR

    if all(Path(p).resolve() == DEFAULT_PRIOR.resolve() for p in priors or []):
        return "the committed tiny prior"
    named = ", ".join(priors)
    return f"the prior{'s' if len(priors) > 1 else ''} {named} (given by --concept-args/--expand-args)"


def write_report(
    out: Path, profile: dict, results: dict, curve: list[dict], seconds: float, name: str, split: str = "test"
) -> str:
    import platform

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
        method = ROWS[row]
        sheet = out / "sets" / f"{method}-{profile['shots'][0]}shot-seed{profile['seeds'][0]}" / "preview.png"
        if method and sheet.is_file() and not sheet.is_symlink():  # a link could copy any file in
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
    here = machine_summary()
    header = [
        f"# Tiny benchmark ({name} profile, {split} split)",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M')} on {platform.node()} ({here}); "
        f"wall time {seconds / 60:.1f} min.",
        "",
        *machine_lines(results, here),
        split_sentence(split, profile.get("validation_per_class")),
        "",
        f"Fashion-MNIST n-shot subsets on {prior_phrase(profile.get('priors'))}, "
        f"expansion {EXPANSION_RATIO:g}x, "
        "classifier configs/classifier.yaml, accuracy at the last epoch (mean ± std over seeds). "
        f"{CEILING} = the ceiling: {EXPANSION_RATIO:g} x shots other real training images per class "
        "(disjoint from the subset and the validation split, drawn by the subset's seed). Every set, the "
        "ceiling's included, replaces real samples with the config's p, for the same optimizer steps: "
        "rows differ in their images alone. Paired gain = accuracy − Original's on the same subset seed, "
        "in points, mean ± std over seeds; wins = seeds where the row beats Original; % of ceiling = "
        "paired gain / the ceiling's paired gain (— when the ceiling gains nothing). "
        f"{alone} Faithfulness = oracle accuracy of the set's images, diversity = mean pairwise "
        "oracle-feature distance within a class; images/s = generation on this machine.",
        "",
    ]
    cseeds = profile.get("classifier_seeds")
    if cseeds:
        header[-1:-1] = [
            f"Classifier seeds: every classifier ran once per seed in {cseeds} (seed_everything); a "
            "subset's accuracy is the mean of its runs, so the spread and the wins are over subsets.",
            "",
        ]
    runs = profile.get("concept_runs", 1)
    if runs > 1:
        header[-1:-1] = [
            f"Concepts: learned {runs} times per subset; each subset's sets use the run chosen by the "
            "label-free check of tools/select_concepts.py (concepts/<subset>.selection.json).",
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
