"""Faithfulness against diversity of Diff-II, DistDiff and Diff-II + DistDiff, each swept over one setting.

    python benchmarks/fidelity_diversity.py                       # 5-shot seed 0, the default sweeps
    python benchmarks/fidelity_diversity.py --seed 1 --out outputs/fidelity-diversity-seed1
    python benchmarks/fidelity_diversity.py --sweeps "Diff-II+DistDiff: rho"  [--expand-args=--…]
    python benchmarks/fidelity_diversity.py --method-args diffii_distdiff:--model.init_args.method.bound=0.5

Each point is one synthetic set, made as the tiny benchmark makes its sets (`tiny_benchmark.make_set`:
the method's configs/expand/<method>.yaml, the subset's concepts, 5x expansion) with one setting changed,
and measured by the oracle: faithfulness (the share of images the oracle puts in their class) and
diversity (mean pairwise distance of oracle features within a class). No classifier is trained and no
evaluation split is read, so it serves tuning as well as the report.

The sweeps (`SWEEPS`): Diff-II and Diff-II + DistDiff over where λ is drawn on the circle through the two
inversions (`lambda_range`: the arc between them, then ever more of the turn beyond), DistDiff and
Diff-II + DistDiff over the guidance step size ρ. Diff-II + DistDiff reaches "a point neither parent
reaches" when no parent's point is at least as faithful *and* at least as diverse; the report lists such
points. Writes points.csv, fidelity_diversity.png and report.md under --out; finished sets are reused.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.tiny_benchmark import ensure_concepts, make_set  # noqa: E402

METHOD_ARG = "--model.init_args.method.init_args"
LAMBDA_RANGES = ["interpolation", [0.0, 0.1], [0.0, 0.25], [0.0, 0.5], "full"]
STEP_SIZES = [0.0, 10.0, 30.0, 100.0]


class Sweep(NamedTuple):
    label: str  # the method's row name in the tiny benchmark
    method: str  # configs/expand/<method>.yaml
    setting: str  # the method argument swept
    values: list


SWEEPS = {
    "Diff-II: lambda": Sweep("Diff-II", "diffii", "lambda_range", LAMBDA_RANGES),
    "Diff-II+DistDiff: lambda": Sweep("Diff-II+DistDiff", "diffii_distdiff", "lambda_range", LAMBDA_RANGES),
    "DistDiff: rho": Sweep("DistDiff", "distdiff", "step_size", STEP_SIZES),
    "Diff-II+DistDiff: rho": Sweep("Diff-II+DistDiff", "diffii_distdiff", "step_size", STEP_SIZES),
}
PARENTS = ("Diff-II", "DistDiff")
COMBINATION = "Diff-II+DistDiff"


def value_text(value) -> str:
    """A swept value as it goes on the command line and into the table: [0.0, 0.25] -> "[0.0,0.25]"."""
    return json.dumps(value, separators=(",", ":")) if isinstance(value, list) else str(value)


def folder_name(sweep: Sweep, value) -> str:
    text = value_text(value).replace("[", "").replace("]", "").replace(",", "-")
    return f"{sweep.method}-{sweep.setting}-{text}"


def run_sweep(out: Path, sweep: Sweep, shots: int, seed: int, concepts: Path, extra: list[str]) -> list[dict]:
    points = []
    for value in sweep.values:
        arg = f"{METHOD_ARG}.{sweep.setting}={value_text(value)}"
        # one cache for every point: the inversion pool and real features do not change along a sweep
        shared = [f"--data.init_args.cache_dir={out / 'cache'}", *extra, arg]
        info = make_set(out / folder_name(sweep, value), sweep.method, shots, seed, concepts, shared)
        points.append(
            {
                "method": sweep.label,
                "setting": sweep.setting,
                "value": value_text(value),
                "faithfulness": info["faithfulness"],
                "diversity": info["diversity"],
                "images_per_s": info["images_per_s"],
            }
        )
    return points


def dominates(a: dict, b: dict) -> bool:
    """a is at least as faithful and at least as diverse as b."""
    return a["faithfulness"] >= b["faithfulness"] and a["diversity"] >= b["diversity"]


def unreached_points(points: list[dict]) -> list[dict]:
    """The combination's points that no parent's point dominates: more diverse than every parent point
    that is at least as faithful (the issue's "a point neither parent reaches")."""
    parents = [p for p in points if p["method"] in PARENTS]
    combined = [p for p in points if p["method"] == COMBINATION]
    return [c for c in combined if parents and not any(dominates(p, c) for p in parents)]


def plot(points: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    sweeps: dict[tuple[str, str], list[dict]] = {}
    for p in points:
        sweeps.setdefault((p["method"], p["setting"]), []).append(p)
    for (method, setting), line in sweeps.items():
        style = "o-" if setting == "lambda_range" else "s--"
        ax.plot([p["diversity"] for p in line], [p["faithfulness"] for p in line], style,
                label=f"{method} over {setting}")  # fmt: skip
        for p in line:
            ax.annotate(p["value"], (p["diversity"], p["faithfulness"]), textcoords="offset points",
                        xytext=(3, 3), fontsize=6)  # fmt: skip
    ax.set_xlabel("diversity (mean pairwise oracle-feature distance within a class)")
    ax.set_ylabel("faithfulness (oracle accuracy)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def write_report(
    out: Path, points: list[dict], shots: int, seed: int, extra: list[str], seconds: float
) -> str:
    with (out / "points.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(points[0]))
        writer.writeheader()
        writer.writerows(points)
    title = f"{shots}-shot seed {seed}: faithfulness vs diversity"
    plot(points, out / "fidelity_diversity.png", title)
    lines = [
        f"# {title}",
        "",
        f"Made by `python benchmarks/fidelity_diversity.py --shots {shots} --seed {seed}`"
        + (f" with {' '.join(extra)}" if extra else "")
        + f"; {len(points)} sets, wall time {seconds / 60:.1f} min.",
        "Oracle figures of each set; no classifier, no evaluation split.",
        "",
        "![faithfulness vs diversity](fidelity_diversity.png)",
        "",
        "| method | swept | value | faithfulness | diversity | images/s |",
        "|---|---|---|---|---|---|",
    ]
    for p in points:
        speed = f"{p['images_per_s']:.2f}" if p["images_per_s"] else "—"
        lines.append(f"| {p['method']} | {p['setting']} | {p['value']} | {p['faithfulness']:.3f} | "
                     f"{p['diversity']:.3f} | {speed} |")  # fmt: skip
    unreached = unreached_points(points)
    methods = {p["method"] for p in points}
    has_both = COMBINATION in methods and bool(methods & set(PARENTS))
    lines.append("")
    if not has_both:
        lines.append("The sweeps run here do not include both the combination and a parent: no comparison.")
    elif unreached:
        named = ", ".join(f"{p['setting']} = {p['value']} ({p['faithfulness']:.3f} / {p['diversity']:.3f})"
                          for p in unreached)  # fmt: skip
        lines.append(f"Points of {COMBINATION} that no parent point dominates (faithfulness / diversity): "
                     f"{named}.")  # fmt: skip
    else:
        lines.append(f"Every point of {COMBINATION} is dominated by a parent's point (at least as faithful "
                     "and at least as diverse): it reaches nothing its parents do not.")  # fmt: skip
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text)
    return text


def method_args(items: list[str]) -> dict[str, list[str]]:
    """["diffii_distdiff:--x=1", …] -> {"diffii_distdiff": ["--x=1"], …}; a method no sweep makes is an
    error, never a setting silently dropped."""
    methods = {sweep.method for sweep in SWEEPS.values()}
    by_method: dict[str, list[str]] = {}
    for item in items:
        method, sep, arg = item.partition(":")
        if not sep or method not in methods or not arg.startswith("--"):
            raise SystemExit(f"--method-args takes METHOD:--key=value with METHOD one of {sorted(methods)}, "
                             f"got {item!r}")  # fmt: skip
        by_method.setdefault(method, []).append(arg)
    return by_method


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="the few-shot subset's seed")
    parser.add_argument("--out", default="outputs/fidelity-diversity")
    parser.add_argument("--sweeps", nargs="+", choices=list(SWEEPS), default=list(SWEEPS))
    parser.add_argument("--concept-args", nargs="*", action="extend", default=[],
                        help="extra train.py args for concepts (as tiny_benchmark.py)")  # fmt: skip
    parser.add_argument("--expand-args", nargs="*", action="extend", default=[],
                        help="extra expand.py args for every set, e.g. a guidance scale")  # fmt: skip
    parser.add_argument("--method-args", nargs="*", action="extend", default=[], metavar="METHOD:ARG",
                        help="an extra expand.py arg for one method's sets only, e.g. "
                        "diffii_distdiff:--model.init_args.method.init_args.bound=0.5")  # fmt: skip
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    concepts = ensure_concepts(out, args.shots, args.seed, args.concept_args)
    points = []
    per_method = method_args(args.method_args)
    for name in args.sweeps:
        sweep = SWEEPS[name]
        extra = [*args.expand_args, *per_method.get(sweep.method, [])]
        points += run_sweep(out, sweep, args.shots, args.seed, concepts, extra)
    settings = [*args.expand_args, *args.method_args]
    print(write_report(out, points, args.shots, args.seed, settings, time.time() - started))
    return points


if __name__ == "__main__":
    from diffexpand.cli import run_with_clear_errors  # an error of ours as one line, not a traceback

    run_with_clear_errors(main)
