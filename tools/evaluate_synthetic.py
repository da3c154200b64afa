"""Faithfulness and diversity of synthetic sets.

    python tools/evaluate_synthetic.py outputs/synthetic/diffii [more folders ...] \
        [--real-reference 1000] [--reference-split validation]
    python tools/evaluate_synthetic.py DIR --no-oracle --clip /models/clip-vit-large-patch14 \
        --lpips alex --prompt-template "a photo of a {}" --class-names-from DIR2

Oracle metrics (the tiny benchmark): faithfulness = oracle accuracy, diversity = mean pairwise oracle
feature distance, Fréchet distance to real Fashion-MNIST images (the validation split carved from the
training split by default; `--reference-split test` for the test split). `--clip` adds the CLIP score
against "a photo of a {class name}", `--lpips` the mean pairwise LPIPS within classes. Prints one row
per folder and writes `quality.json` into each.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from diffexpand.cli import run_with_clear_errors
from diffexpand.evaluation.synthetic_quality import (
    REFERENCE_SPLITS,
    evaluate_set,
    fashion_mnist_reference_images,
)
from diffexpand.oracle_cnn import OracleCNN
from diffexpand.paths import DEFAULT_ORACLE
from diffexpand.set_reader import read_nonempty_set

MAX_CLIP_LABEL = 100_000  # one CLIP prompt is made per class index up to the largest label


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folders", nargs="+")
    parser.add_argument("--oracle", default=str(DEFAULT_ORACLE))
    parser.add_argument(
        "--real-reference",
        type=int,
        default=1000,
        help="real images for the Fréchet distance (0: skip; at most 1,000 from the validation split)",
    )
    parser.add_argument("--reference-split", choices=REFERENCE_SPLITS, default="validation")
    parser.add_argument("--no-oracle", action="store_true", help="skip the oracle metrics (other datasets)")
    parser.add_argument("--clip", default=None, help="CLIP model folder or hub id for the CLIP score")
    parser.add_argument("--lpips", default=None, help="LPIPS backbone (alex, vgg, squeeze) for diversity")
    parser.add_argument("--prompt-template", default="a photo of a {}")
    args = parser.parse_args(argv)
    oracle = None if args.no_oracle else OracleCNN.load(args.oracle)
    # the oracle's classes bound the labels (a label it has no class for would count as unfaithful)
    classes = None if oracle is None else int(oracle.config["num_classes"])
    sets = {folder: read_nonempty_set(folder, classes) for folder in args.folders}  # all checked first
    for folder, checked in sets.items():
        top = max(r["label"] for r in checked.records)
        if args.clip and top >= MAX_CLIP_LABEL:
            raise ValueError(f"{folder}: labels reach {top}; the CLIP score takes one prompt per class, "
                             f"labels below {MAX_CLIP_LABEL}")  # fmt: skip
    real = None
    if args.real_reference and oracle is not None:
        real = fashion_mnist_reference_images(args.real_reference, args.reference_split)
    results = {}
    head = f"{'set':<28} {'images':>7} {'faithfulness':>13} {'diversity':>10} {'Fréchet':>8}"
    print(f"{head} {'CLIP':>7} {'LPIPS':>7}")
    for folder in args.folders:
        prompts = None
        if args.clip:
            names = {r["label"]: r.get("class_name", str(r["label"])) for r in sets[folder].records}
            prompts = [args.prompt_template.format(names.get(c, c)) for c in range(max(names) + 1)]
        result = evaluate_set(folder, oracle, prompts, args.clip, args.lpips, real)
        if real is not None:
            result["frechet_reference"] = {"split": args.reference_split, "images": len(real)}
        (Path(folder) / "quality.json").write_text(json.dumps(result, indent=2) + "\n")
        o = result.get("oracle", {})

        def cell(value, width):
            return f"{value:>{width}.3f}" if value is not None else f"{'-':>{width}}"

        print(
            f"{Path(folder).name:<28} {result['images']:>7} {cell(o.get('faithfulness'), 13)} "
            f"{cell(o.get('diversity'), 10)} {cell(o.get('frechet_distance'), 8)} "
            f"{cell(result.get('clip_score', {}).get('mean'), 7)} "
            f"{cell(result.get('lpips_diversity', {}).get('mean'), 7)}"
        )
        results[folder] = result
    return results


if __name__ == "__main__":
    run_with_clear_errors(main)
