"""DistDiff guidance on versus off, same seeds, on the tiny benchmark.

    python benchmarks/distdiff_guidance.py [--images-per-class 25] [--extractor timm]

Runs configs/expand/distdiff.yaml twice through the CLI (guidance on, then `guidance: false`), and
reports per class and overall: the mean energy of the final images to their prototypes (same
extractor, prototypes and energy the guidance used), the Fréchet distance in oracle features to real
images of the class, and the wall time of each run (the cost of guidance). The real reference is a
validation pool carved from the *training* split (up to 1,000 images per class, disjoint from the
5-shot subset the set was expanded from), so settings tuned on it never look at the test split.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def run(out: Path, cache: Path, args, guidance: bool):
    import expand

    cli_args = [
        "--config",
        str(REPO / "configs/expand/distdiff.yaml"),
        f"--output_dir={out}",
        f"--trainer.accelerator={args.accelerator}",
        f"--data.init_args.images_per_class={args.images_per_class}",
        f"--data.init_args.cache_dir={cache}",
        f"--model.init_args.method.extractor={args.extractor}",
        f"--model.init_args.method.guidance={str(guidance).lower()}",
        f"--data.init_args.batch_size={args.batch_size}",
        *[f"--model.init_args.method.{kv}" for kv in args.method_arg],
    ]
    cli = expand.cli_main(cli_args, run=False)
    start = time.perf_counter()
    cli.trainer.predict(cli.model, datamodule=cli.datamodule, return_predictions=False)
    return cli, time.perf_counter() - start


@torch.no_grad()
def energies(cli, folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(energy per image, labels) of the final images, against the prototypes guidance used."""
    from diffexpand.evaluation.synthetic_quality import load_synthetic

    method = cli.model.method
    protos = cli.datamodule.dataset.prepared["prototypes"]  # what DistDiff.prepare built for guidance
    images, labels = load_synthetic(folder)
    extractor = method.feature_extractor().cpu()
    out = []
    for chunk, lab in zip(images.split(50), labels.split(50), strict=True):
        c = torch.stack([protos[int(y)][0] for y in lab])
        g = torch.stack([protos[int(y)][1] for y in lab]) if method.groups > 0 else None
        out.append(method.features_energy(extractor(chunk), c, g))
    return torch.cat(out), labels


def validation_pool(per_class: int, shots: int = 5, seed: int = 0):
    """Training-split images outside the few-shot subset, the first `per_class` of each class."""
    import numpy as np

    from diffexpand.data.fashion_mnist import load_fashion_mnist
    from diffexpand.data.subsets import few_shot_indices

    x, y = load_fashion_mnist("train")
    free = np.setdiff1d(np.arange(len(y)), few_shot_indices(y, shots, seed))
    keep = np.concatenate([free[y[free] == c][:per_class] for c in np.unique(y)])
    return x[keep], y[keep]


def main(argv=None) -> dict:
    from diffexpand.data.fashion_mnist import CLASS_NAMES
    from diffexpand.evaluation.synthetic_quality import frechet_distance, load_synthetic, oracle_outputs
    from diffexpand.oracle_cnn import OracleCNN
    from diffexpand.paths import DEFAULT_ORACLE

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images-per-class", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--extractor", default="timm")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--validation-per-class", type=int, default=1000)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument(
        "--method-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a DistDiff setting, e.g. step_size=1.0 (repeatable)",
    )
    args = parser.parse_args(argv)

    oracle = OracleCNN.load(DEFAULT_ORACLE)
    x, y = validation_pool(args.validation_per_class)
    real = torch.from_numpy(x.copy()).float()[:, None].repeat(1, 3, 1, 1) / 127.5 - 1
    _, real_feats = oracle_outputs(oracle, real)
    y = torch.from_numpy(y.astype("int64"))

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, guidance in (("on", True), ("off", False)):
            folder = Path(tmp) / name
            cli, seconds = run(folder, Path(tmp) / "cache", args, guidance)
            energy, labels = energies(cli, folder)
            images, _ = load_synthetic(folder)
            _, feats = oracle_outputs(oracle, images)
            per_class = {
                CLASS_NAMES[c]: {
                    "energy": float(energy[labels == c].mean()),
                    "frechet": frechet_distance(feats[labels == c], real_feats[y == c]),
                }
                for c in sorted(set(labels.tolist()))
            }
            results[name] = {
                "seconds": seconds,
                "images": len(labels),
                "energy": float(energy.mean()),
                "frechet_mean": sum(v["frechet"] for v in per_class.values()) / len(per_class),
                "per_class": per_class,
            }
    on, off = results["on"], results["off"]
    print(f"{'class':<14}{'energy on':>10}{'energy off':>11}{'Fréchet on':>11}{'Fréchet off':>12}")
    for c in on["per_class"]:
        a, b = on["per_class"][c], off["per_class"][c]
        print(f"{c:<14}{a['energy']:>10.4f}{b['energy']:>11.4f}{a['frechet']:>11.3f}{b['frechet']:>12.3f}")
    print(
        f"{'mean':<14}{on['energy']:>10.4f}{off['energy']:>11.4f}{on['frechet_mean']:>11.3f}{off['frechet_mean']:>12.3f}"
    )
    print(
        f"time: guidance on {on['seconds']:.1f} s, off {off['seconds']:.1f} s for {on['images']} images "
        f"(x{on['seconds'] / off['seconds']:.2f})"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    from diffexpand.cli import run_with_clear_errors  # an error of ours as one line, not a traceback

    run_with_clear_errors(main)
