"""A linear probe of the tiny benchmark's sets: what each set adds to a softmax regression on frozen
ImageNet EfficientNet-Lite0 features of the few real images, paired against the real images alone.

    python benchmarks/tiny_benchmark.py --profile quick --split validation --seeds 0 1 2   # makes the sets
    python benchmarks/linear_probe.py --bench outputs/bench-quick --split validation --seeds 0 1 2

It reads the sets a tiny-benchmark run left under `<bench>/sets/<method>-<shots>shot-seed<seed>` (every
method found for all the seeds, or --rows), so it trains no diffusion model and no network: features
once per image (cached under --cache), then seconds per fit (`diffexpand.classification.linear_probe`).
The loss weighs the real images by 1 − w and the set by w (--set-weight, the replacement share of
configs/classifier.yaml by default), with a set's soft labels where it has them. The real-only probe is
Original; `real` (the benchmark's Real ×5 set of other real images) is the ceiling. Figures as the tiny
benchmark gives them: per subset seed, paired gain, mean ± std, wins, share of the ceiling. Writes
linear_probe-<split>-<shots>shot.md and .json under --bench. Tune on validation; read test once.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_protocol import CEILING_METHOD, IMAGE_SIZE, ROWS  # noqa: E402
from benchmarks.stage_records import inputs_digest, set_inputs  # noqa: E402
from diffexpand.classification.linear_probe import ProbeData, fit_linear_probe, probe_accuracy  # noqa: E402
from diffexpand.classification.paired import (  # noqa: E402
    paired_gains,
    paired_gains_per_class,
    share_of_ceiling,
)
from diffexpand.data.fashion_mnist import CLASS_NAMES  # noqa: E402

CEILING = CEILING_METHOD  # the set folder of the tiny benchmark's Real ×5 row
NUM_CLASSES = len(CLASS_NAMES)
SPLITS = ("validation", "test")


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def set_folders(bench: Path, shots: int, seeds: list[int] | None, rows: list[str] | None) -> dict[str, dict]:
    """{method: {seed: folder}} of the sets under <bench>/sets for these shots and seeds (None: every seed
    some set has): the methods asked for (each must have every seed), else every method that has them all."""
    found: dict[str, dict[int, Path]] = {}
    for folder in sorted((bench / "sets").glob(f"*-{shots}shot-seed*")):
        match = re.fullmatch(rf"(.+)-{shots}shot-seed(\d+)", folder.name)
        if match and folder.is_dir() and (seeds is None or int(match[2]) in seeds):
            found.setdefault(match[1], {})[int(match[2])] = folder
    if seeds is None:
        seeds = sorted({seed for by_seed in found.values() for seed in by_seed})
    complete = {method: by_seed for method, by_seed in found.items() if set(by_seed) == set(seeds)}
    if not found:
        raise FileNotFoundError(f"{bench / 'sets'} holds no {shots}-shot set: run the tiny benchmark first")
    missing = [row for row in rows if row not in complete] if rows else []
    if missing or not complete:
        raise FileNotFoundError(
            f"{bench / 'sets'} has no {shots}-shot set for every seed {seeds} of "
            f"{missing or 'any method'} (complete: {sorted(complete) or 'none'}): run the tiny benchmark "
            "with those rows and seeds first"
        )
    return {row: complete[row] for row in rows} if rows else complete


def set_targets(folder: Path) -> torch.Tensor:
    """A set's targets, one row per record: the soft label where the method made one, else one-hot
    (every record checked by the set reader first)."""
    from diffexpand.classification.mixing import soft_target
    from diffexpand.set_reader import read_nonempty_set

    records = read_nonempty_set(folder, NUM_CLASSES).records
    return torch.stack([soft_target(r["label"], NUM_CLASSES, r.get("soft_label")) for r in records])


def set_images(folder: Path) -> torch.Tensor:
    from diffexpand.evaluation.synthetic_quality import load_synthetic

    return load_synthetic(folder, IMAGE_SIZE)[0]


class Features:
    """Frozen, L2-normalised features of image batches, cached by the extractor and what the images
    are (a set folder's content digest, or a real split's indices)."""

    def __init__(self, extractor: str, cache_dir: Path):
        from diffexpand.features import build_extractor

        self.extractor = build_extractor(extractor).eval()
        self.cache_dir = cache_dir

    def __call__(self, images_of, what: str) -> torch.Tensor:
        from diffexpand.cache import cache_key, cached_tensors
        from diffexpand.features import embed_normalized

        def build() -> dict[str, torch.Tensor]:
            images = images_of()
            say(f"features of {what} ({len(images)} images)")
            return {"features": embed_normalized(self.extractor, images)}

        key = cache_key(extractor=self.extractor.fingerprint(), images=what)
        return cached_tensors(self.cache_dir, "probe-features", key, build, {"features": (None, None)})[
            "features"
        ]


def real_images(x: np.ndarray, indices: np.ndarray) -> torch.Tensor:
    from diffexpand.evaluation.synthetic_quality import fashion_mnist_as_rgb

    return fashion_mnist_as_rgb(x[indices], IMAGE_SIZE)


def indices_digest(indices: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:16]


def probe_table(args) -> dict:
    """Fit every probe: {"accuracy": {row: {seed: acc %}}, "per_class": {row: {seed: [acc % per class]}}}."""
    from diffexpand.data.fashion_mnist import load_fashion_mnist
    from diffexpand.data.subsets import few_shot_indices, validation_indices

    bench = Path(args.bench)
    sets = set_folders(bench, args.shots, args.seeds, args.rows)
    seeds = sorted({seed for by_seed in sets.values() for seed in by_seed})
    features = Features(args.extractor, Path(args.cache))
    x_train, y_train = load_fashion_mnist("train")
    if args.split == "validation":
        x_eval, y_eval = x_train, y_train
        held = validation_indices(y_train)
    else:
        x_eval, y_eval = load_fashion_mnist("test")
        held = np.arange(len(y_eval))
    eval_features = features(
        lambda: real_images(x_eval, held), f"fashion_mnist-{args.split}-{indices_digest(held)}"
    )
    eval_labels = torch.as_tensor(y_eval[held]).long()
    accuracy: dict[str, dict[int, float]] = {"Original": {}}
    per_class: dict[str, dict[int, list]] = {"Original": {}}
    for seed in seeds:
        subset = few_shot_indices(y_train, args.shots, seed)
        real = ProbeData(
            features(
                lambda subset=subset: real_images(x_train, subset),
                f"fashion_mnist-train-{indices_digest(subset)}",
            ),
            torch.nn.functional.one_hot(torch.as_tensor(y_train[subset]).long(), NUM_CLASSES).float(),
            1.0,
        )
        probe = fit_linear_probe([real], args.weight_decay)
        accuracy["Original"][seed], per_class["Original"][seed] = probe_accuracy(
            probe, eval_features, eval_labels
        )
        for method, by_seed in sets.items():
            folder = by_seed[seed]
            set_features = features(
                lambda folder=folder: set_images(folder), f"set-{inputs_digest(*set_inputs(folder))}"
            )
            targets = set_targets(folder)
            if len(targets) != len(set_features):
                raise ValueError(f"{folder}: {len(targets)} records but {len(set_features)} cached features")
            parts = [
                ProbeData(real.features, real.targets, 1 - args.set_weight),
                ProbeData(set_features, targets, args.set_weight),
            ]
            probe = fit_linear_probe(parts, args.weight_decay)
            acc, classes = probe_accuracy(probe, eval_features, eval_labels)
            accuracy.setdefault(method, {})[seed] = acc
            per_class.setdefault(method, {})[seed] = classes
        say(f"seed {seed}: " + ", ".join(f"{row} {by_seed[seed]:.2f}" for row, by_seed in accuracy.items()))
    return {"accuracy": accuracy, "per_class": per_class}


def report(
    args, accuracy: dict[str, dict[int, float]], per_class: dict[str, dict[int, list]]
) -> tuple[str, dict]:
    """The markdown tables and their figures: each row's paired gain over Original per seed, mean ± std,
    wins, and share of the ceiling's gain (when `real` was probed); then each row's paired gain class
    by class (where a gain or a loss comes from)."""
    original = accuracy["Original"]
    ceiling = paired_gains(accuracy[CEILING], original).mean if CEILING in accuracy else None
    seeds = sorted(original)
    lines = [
        f"# Linear probe, {args.shots}-shot, {args.split} split, seeds {', '.join(map(str, seeds))}",
        "",
        f"Softmax regression on frozen `{args.extractor}` features (L2-normalised), weight decay "
        f"{args.weight_decay}, set weight {args.set_weight} (real images {1 - args.set_weight:g}); sets from "
        f"`{args.bench}/sets`. Paired gain = accuracy − Original's on the same subset seed, in points.",
        "",
        "| row | accuracy % | paired gain per seed | paired gain | wins | % of ceiling |",
        "|---|---|---|---|---|---|",
    ]
    figures = {}
    order = [
        "Original",
        *([CEILING] if CEILING in accuracy else []),
        *sorted(set(accuracy) - {"Original", CEILING}),
    ]
    for row in order:
        by_seed = accuracy[row]
        mean = float(np.mean([by_seed[s] for s in seeds]))
        if row == "Original":
            lines.append(f"| Original | {mean:.2f} | — | — | — | — |")
            figures[row] = {"accuracy": by_seed}
            continue
        gains = paired_gains(by_seed, original)
        share = share_of_ceiling(gains.mean, ceiling) if ceiling is not None else None
        spread = f" ± {gains.std:.2f}" if gains.std is not None else ""
        name = f"{row_label(row)} (ceiling: other real images)" if row == CEILING else row_label(row)
        lines.append(
            f"| {name} | {mean:.2f} | {' / '.join(f'{gains.gains[s]:+.2f}' for s in seeds)} | "
            f"{gains.mean:+.2f}{spread} | {gains.wins}/{gains.seeds} | "
            f"{'—' if share is None else f'{share:.0%}'} |"
        )
        figures[row] = {"accuracy": by_seed, "gain": gains.mean, "std": gains.std, "wins": gains.wins}
    lines += per_class_lines(order[1:], per_class)
    return "\n".join(lines) + "\n", figures


def row_label(method: str) -> str:
    """The tiny benchmark's row name of a set method ("diffii" -> "Diff-II"), else the folder's name."""
    return next((row for row, made_by in ROWS.items() if made_by == method), method)


def per_class_lines(rows: list[str], per_class: dict[str, dict[int, list]]) -> list[str]:
    def named(by_seed: dict[int, list]) -> dict[int, dict[str, float]]:
        return {seed: dict(zip(CLASS_NAMES, accs, strict=True)) for seed, accs in by_seed.items()}

    lines = [
        "",
        "Paired gain per class (points, mean over seeds):",
        "",
        "| row | " + " | ".join(CLASS_NAMES) + " |",
        "|---" * (len(CLASS_NAMES) + 1) + "|",
    ]
    original = named(per_class["Original"])
    for row in rows:
        gains = paired_gains_per_class(named(per_class[row]), original)
        lines.append(
            f"| {row_label(row)} | "
            + " | ".join("—" if g is None else f"{g:+.1f}" for g in gains.values())
            + " |"
        )
    return lines


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bench", default="outputs/bench-quick", help="a tiny benchmark --out with sets/")
    parser.add_argument("--split", choices=SPLITS, default="validation", help="tune on validation (default)")
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: every seed of the sets")
    parser.add_argument("--rows", nargs="+", default=None, help="set methods (default: every one found)")
    parser.add_argument("--set-weight", type=float, default=0.3, help="the set's share of the loss")
    parser.add_argument("--weight-decay", type=float, default=1e-3)
    parser.add_argument("--extractor", default="timm", help="a features kind (default: ImageNet Lite0)")
    parser.add_argument("--cache", default="outputs/cache", help="where features are cached")
    args = parser.parse_args(argv)
    if not 0 < args.set_weight < 1:
        parser.error(f"--set-weight must lie strictly between 0 and 1, got {args.set_weight}")
    if args.weight_decay < 0:
        parser.error(f"--weight-decay must be >= 0, got {args.weight_decay}")
    try:
        measured = probe_table(args)
    except FileNotFoundError as err:  # no sets to probe: say what is missing, not a traceback
        parser.error(str(err))
    text, figures = report(args, measured["accuracy"], measured["per_class"])
    stem = Path(args.bench) / f"linear_probe-{args.split}-{args.shots}shot"
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".json").write_text(
        json.dumps({"figures": figures, "per_class": measured["per_class"], "args": vars(args)}, indent=1)
        + "\n"
    )
    print(text)
    return figures


if __name__ == "__main__":
    from diffexpand.cli import run_with_clear_errors  # an error of ours as one line, not a traceback

    run_with_clear_errors(main)
