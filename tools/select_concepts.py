"""Choose among concept runs learned on the same few shots: the run whose learned prompts draw images
nearest to each class's own shots (no label beyond the few shots is used).

    python tools/select_concepts.py RUN_A RUN_B [RUN_C ...] --shots 5 --seed 0 [--n 40] [--out DIR]

Each run's learned prompts are sampled on the same noise (DDIM, --steps, CFG --guidance); a sample
agrees when, in frozen ImageNet EfficientNet-Lite0 features, the prototype of its own class's real shots
is the nearest one. Prints per-class agreement for every run, names the chosen one (highest mean, then
highest worst class) and writes selection.json into --out (default outputs/concept-selection/<first
run's name>). `--oracle` adds the oracle's verdict on the same samples, for diagnosis only: the choice
never reads it (the oracle was trained on every label).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from diffexpand.concepts.selection import score_runs


def few_shot_images(dataset: str, root, shots: int, seed: int, image_size: int):
    """The subset the concept learner trained on, through its own data module: (images, labels)."""
    from datamodules.labeled import LabeledImageDataModule

    data = LabeledImageDataModule(dataset, root, "few_shot", shots, seed=seed, image_size=image_size)
    data.prepare_data()
    data.setup("fit")
    items = [data.train_set[i] for i in range(len(data.train_set))]
    return torch.stack([i["pixel_values"] for i in items]), torch.tensor([i["label"] for i in items])


def print_table(result: dict) -> None:
    names = result["class_names"]
    print(f"{'run':<40} " + " ".join(f"{n[:8]:>8}" for n in names) + f" {'mean':>6} {'worst':>6}")
    for i, row in enumerate(result["runs"]):
        mark = "*" if i == result["chosen"] else " "
        label = (mark + Path(row["folder"]).name)[:40]
        shares = " ".join(f"{a:>8.3f}" for a in row["agreement"])
        print(f"{label:<40} {shares} {row['mean']:>6.3f} {row['worst']:>6.3f}")
        if "oracle" in row:
            oracle = row["oracle"]
            print(f"{'  oracle (diagnosis only)':<40} " + " ".join(f"{a:>8.3f}" for a in oracle), end="")
            print(f" {sum(oracle) / len(oracle):>6.3f} {min(oracle):>6.3f}")
    print(f"chosen: {result['runs'][result['chosen']]['folder']}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", help="concept folders learned on the same subset")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--root", default=None, help="the dataset's folder (as the concept config's)")
    parser.add_argument("--shots", type=int, required=True, help="the subset the runs learned from")
    parser.add_argument("--seed", type=int, required=True, help="the subset's seed")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--n", type=int, default=40, help="samples per class and run")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--sample-seed", type=int, default=0)
    parser.add_argument("--oracle", default=None, help="also print the oracle's verdict (diagnosis only)")
    parser.add_argument("--out", default=None, help="folder for selection.json")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    images, labels = few_shot_images(args.dataset, args.root, args.shots, args.seed, args.image_size)
    oracle = None
    if args.oracle:
        from diffexpand.oracle_cnn import OracleCNN

        oracle = OracleCNN.load(args.oracle)
    result = score_runs(
        args.runs, images, labels, args.n, args.steps, args.guidance, args.sample_seed, oracle=oracle
    )
    result |= {"subset": {"dataset": args.dataset, "shots": args.shots, "seed": args.seed}}
    result |= {"images_per_class": args.n, "ddim_steps": args.steps, "guidance_scale": args.guidance}
    print_table(result)
    out = Path(args.out) if args.out else Path("outputs/concept-selection") / Path(args.runs[0]).name
    out.mkdir(parents=True, exist_ok=True)
    (out / "selection.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    from diffexpand.cli import run_with_clear_errors  # an error of ours as one line, not a traceback

    run_with_clear_errors(main)
