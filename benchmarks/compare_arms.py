"""Paired comparison of tiny-benchmark runs that differ in one change: how the change moved each row's
gain, run by run.

    python benchmarks/compare_arms.py outputs/v3check-v3 outputs/lora-lr-v3 --split validation --shots 5 \
        --seeds 0 1 2 --classifier-seeds 0 1 2 --rows Diff-II DistDiff

A check of one change runs the tiny benchmark into a base folder and one folder per arm, on one machine
(classifier figures from two machines do not pair), against the same Original runs (trained in the base and
copied into each arm, or trained again there). This reads the classifier records they left
(classifier/<split>/<row>-<shots>shot-seed<s>[-cs<c>].json), pairs every run of a row with the base's
Original on the same subset and classifier seed, and prints, per row, a table: each run's gain, the mean ± std
over subsets (subsets won, runs won), each arm's per-run difference to the base (mean ± std, runs higher),
the run spread (the pooled standard deviation of a run's gain within a subset: the noise of one run, which a
larger validation split or more classifier seeds can shrink), and the sets' oracle faithfulness / diversity
(sets/<method>-<shots>shot-seed<s>/set_metrics.json, where kept).
An arm's own Original record, where it has one, must equal the base's: otherwise the two folders were not
measured alike and nothing is paired; so must the validation split's size every record was evaluated on
(tiny_benchmark.py --validation-per-class), which the header names. It reads only the records under the
folders it is given.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository's packages

from benchmarks.bench_protocol import ROWS, SPLITS, classifier_config_seed  # noqa: E402
from benchmarks.stage_records import read_record, recorded_accuracy  # noqa: E402
from benchmarks.tiny_benchmark import MIXING, VALIDATION_SIZE_ARG, result_path  # noqa: E402
from diffexpand.classification.paired import PairedGains, paired_gains, pooled_within_std  # noqa: E402
from diffexpand.data.subsets import VALIDATION_PER_CLASS  # noqa: E402

ORIGINAL = "Original"
Run = tuple[int, int]  # (subset seed, classifier seed)


@dataclass(frozen=True)
class ArmRow:
    """One row of one folder, paired against the base's Original."""

    gains: dict[Run, float]  # run -> row accuracy − the base's Original accuracy on that run
    per_subset: PairedGains  # over subsets, each subset's accuracy the mean of its classifier runs
    against_base: PairedGains | None  # per run, this folder's accuracy − the base's (None for the base)
    set_quality: tuple[float, float] | None  # mean oracle faithfulness, diversity of the row's sets

    @property
    def run_spread(self) -> float | None:
        """A run's noise: the pooled std of the gains within a subset (None with one classifier seed)."""
        by_subset: dict[int, list[float]] = {}
        for (seed, _), gain in self.gains.items():
            by_subset.setdefault(seed, []).append(gain)
        return pooled_within_std(by_subset)


def record_path(folder: Path, row: str, split: str, shots: int, run: Run, own_seed: int) -> Path:
    """Where the tiny benchmark keeps a run's record (the config's own classifier seed takes no suffix)."""
    seed, cseed = run
    return result_path(folder, row, MIXING, shots, seed, split, None if cseed == own_seed else cseed)


def validation_size(path: Path, record: dict) -> int:
    """The validation split's images per class the run of `record` (read from `path`) was evaluated on:
    its extra settings name a size other than the default; a record without settings predates the option."""
    settings = record.get("settings")
    extra = settings.get("extra") if isinstance(settings, dict) else None
    given = [a for a in extra or [] if isinstance(a, str) and a.startswith(VALIDATION_SIZE_ARG)]
    if not given:
        return VALIDATION_PER_CLASS
    value = given[-1].removeprefix(VALIDATION_SIZE_ARG)
    if not value.isdigit():
        raise ValueError(f"{path}: its settings give the validation split's size as {value!r}, not a number")
    return int(value)


def run_accuracy(
    folder: Path, row: str, split: str, shots: int, run: Run, own_seed: int
) -> tuple[float, str, int]:
    """A finished run's accuracy, the machine it names and the validation split's images per class it
    was evaluated on, from its record (an error names the missing or broken file)."""
    seed, cseed = run
    path = record_path(folder, row, split, shots, run, own_seed)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no record of {row} ({shots}-shot subset {seed}, classifier seed {cseed}, {split}); run "
            f"benchmarks/tiny_benchmark.py with --out {folder} for it first"
        )
    record = read_record(path, "metrics")
    machine = record.get("machine")
    accuracy = recorded_accuracy(path, record, f"{split}/acc")
    return accuracy, machine if isinstance(machine, str) else "unknown", validation_size(path, record)


def set_quality(folder: Path, row: str, shots: int, seeds: Sequence[int]) -> tuple[float, float] | None:
    """Mean oracle faithfulness and diversity of a row's sets over the subsets; None unless every subset's
    set kept them."""
    method = ROWS[row]
    if method is None:  # a row without a set
        return None
    figures = []
    for seed in seeds:
        path = folder / "sets" / f"{method}-{shots}shot-seed{seed}" / "set_metrics.json"
        if not path.is_file():
            return None
        oracle = read_record(path, "oracle")["oracle"]
        values = (oracle.get("faithfulness"), oracle.get("diversity")) if isinstance(oracle, dict) else ()
        if len(values) != 2 or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in values
        ):
            raise ValueError(f"{path}: oracle faithfulness / diversity are {values!r}, not numbers")
        figures.append(values)
    return statistics.mean(f for f, _ in figures), statistics.mean(d for _, d in figures)


def compare(
    base: Path,
    arms: Sequence[Path],
    rows: Sequence[str],
    split: str,
    shots: int,
    seeds: Sequence[int],
    classifier_seeds: Sequence[int],
) -> tuple[dict[str, dict[Path, ArmRow]], dict[Run, float], set[str], int]:
    """Per row, per folder (the base first), its runs paired with the base's Original; also the base's
    Original accuracy per run, the machines the records name and the validation split's images per class
    they were all evaluated on."""
    own_seed = classifier_config_seed()
    runs = [(s, c) for s in seeds for c in classifier_seeds]
    machines: set[str] = set()
    sizes: dict[int, Path] = {}  # validation images per class -> the first record evaluated on them

    def accuracy(folder: Path, row: str, run: Run) -> float:
        value, machine, size = run_accuracy(folder, row, split, shots, run, own_seed)
        machines.add(machine)
        sizes.setdefault(size, folder)
        if split == "validation" and len(sizes) > 1:
            path = record_path(folder, row, split, shots, run, own_seed)
            raise ValueError(
                f"{path}: evaluated on a validation split of {size} images per class, other runs on "
                f"{', '.join(f'{n} ({f})' for n, f in sizes.items() if n != size)}; runs evaluated on "
                "other images do not pair"
            )
        return value

    original = {run: accuracy(base, ORIGINAL, run) for run in runs}
    for arm in arms:
        for run in runs:
            path = record_path(arm, ORIGINAL, split, shots, run, own_seed)
            if path.is_file() and (mine := accuracy(arm, ORIGINAL, run)) != (theirs := original[run]):
                raise ValueError(
                    f"{path}: Original at {100 * mine:.2f} %, the base's at {100 * theirs:.2f} % on the same "
                    "run; the folders were not measured alike (another machine or other settings) and do not "
                    "pair"
                )

    def subset_means(values: dict[Run, float]) -> dict[int, float]:
        return {s: statistics.mean(values[(s, c)] for c in classifier_seeds) for s in seeds}

    table: dict[str, dict[Path, ArmRow]] = {}
    for row in rows:
        table[row] = {}
        base_acc = {run: accuracy(base, row, run) for run in runs}
        for folder in [base, *arms]:
            acc = base_acc if folder == base else {run: accuracy(folder, row, run) for run in runs}
            table[row][folder] = ArmRow(
                gains={run: acc[run] - original[run] for run in runs},
                per_subset=paired_gains(subset_means(acc), subset_means(original)),
                against_base=None if folder == base else paired_gains(acc, base_acc),
                set_quality=set_quality(folder, row, shots, seeds),
            )
    return table, original, machines, next(iter(sizes))


def points(value: float, std: float | None = None) -> str:
    text = f"{100 * value:+.2f}"
    return text if std is None else f"{text} ± {100 * std:.2f}"


def render(
    table: dict[str, dict[Path, ArmRow]],
    original: dict[Run, float],
    machines: set[str],
    split: str,
    shots: int,
    seeds: Sequence[int],
    classifier_seeds: Sequence[int],
    validation_per_class: int = VALIDATION_PER_CLASS,
) -> str:
    """The comparison as Markdown: one table per row, a column per folder."""
    cs = " / ".join(str(c) for c in classifier_seeds)
    original_mean = 100 * statistics.mean(original.values())
    where = f"{split} split" + (
        f" ({validation_per_class} images per class)" if split == "validation" else ""
    )
    lines = [
        f"Paired gain over the base's Original, {where}, {shots}-shot, subsets {list(seeds)} × "
        f"classifier seeds {list(classifier_seeds)}, points. Original: {original_mean:.2f} % over the "
        f"{len(original)} runs.",
        f"Machines named by the records: {', '.join(sorted(machines))}.",
    ]
    if len(machines) > 1:
        lines.append(
            "**Warning: the records name more than one machine; figures from two machines do not pair.**"
        )
    for row, by_folder in table.items():
        folders = list(by_folder)
        lines += [
            "",
            f"### {row}",
            "",
            "| subset | " + " | ".join(f"{f.name}: cs {cs}" for f in folders) + " |",
        ]
        lines.append("|---" * (len(folders) + 1) + "|")
        for s in seeds:
            cells = [
                " / ".join(points(by_folder[f].gains[(s, c)]) for c in classifier_seeds) for f in folders
            ]
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
        summary = []
        for f in folders:
            p = by_folder[f].per_subset
            runs_won = sum(g > 0 for g in by_folder[f].gains.values())
            summary.append(
                f"**{points(p.mean, p.std)}** ({p.wins}/{p.seeds}, runs {runs_won}/{len(original)})"
            )
        lines.append("| mean ± std over subsets (subsets won, runs won) | " + " | ".join(summary) + " |")
        against = [
            "—"
            if (d := by_folder[f].against_base) is None
            else f"{points(d.mean, d.std)} ({d.wins}/{d.seeds})"
            for f in folders
        ]
        lines.append("| per run against the base (runs higher) | " + " | ".join(against) + " |")
        spread = ["—" if (r := by_folder[f].run_spread) is None else f"{100 * r:.2f}" for f in folders]
        lines.append(
            "| run spread: pooled std of a run's gain within a subset | " + " | ".join(spread) + " |"
        )
        quality = [
            "—" if (q := by_folder[f].set_quality) is None else f"{q[0]:.3f} / {q[1]:.3f}" for f in folders
        ]
        lines.append("| sets: faithfulness / diversity (mean over subsets) | " + " | ".join(quality) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", type=Path, help="the tiny-benchmark --out folder of the base arm")
    parser.add_argument(
        "arms", type=Path, nargs="*", help="the --out folders of the arms (none: the base's own figures)"
    )
    parser.add_argument("--split", choices=SPLITS, default="validation")
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="subset seeds")
    parser.add_argument("--classifier-seeds", type=int, nargs="+", default=None, help="default: the config's")
    parser.add_argument("--rows", nargs="+", default=["Diff-II"], choices=[r for r in ROWS if r != ORIGINAL])
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    args = parser.parse_args(argv)
    classifier_seeds = args.classifier_seeds or [classifier_config_seed()]
    for name, values in (
        ("--seeds", args.seeds),
        ("--classifier-seeds", classifier_seeds),
        ("--rows", args.rows),
    ):
        if len(set(values)) != len(values):
            parser.error(f"{name} names one twice: {values}")
    folders = [args.base, *args.arms]
    if len({f.resolve() for f in folders}) != len(folders):
        parser.error("a folder is given twice")
    if missing := [str(f) for f in folders if not f.is_dir()]:
        parser.error(f"not a folder: {', '.join(missing)}")
    if len({f.name for f in folders}) != len(folders):
        parser.error("the folders' names label the columns, so they must differ")
    table, original, machines, size = compare(
        args.base, args.arms, args.rows, args.split, args.shots, args.seeds, classifier_seeds
    )
    text = render(table, original, machines, args.split, args.shots, args.seeds, classifier_seeds, size)
    print(text, end="")
    if args.out:
        args.out.write_text(text)
    return text


if __name__ == "__main__":
    from diffexpand.cli import run_with_clear_errors  # an error of ours as one line, not a traceback

    run_with_clear_errors(main)
