"""Oracle faithfulness and diversity of synthetic sets (the tiny benchmark's set metrics).

    python tools/evaluate_synthetic.py outputs/synthetic/diffii [more folders ...] [--real-test 2000]

Prints one row per folder and writes `quality.json` into each.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from diffexpand.evaluation.synthetic_quality import load_synthetic, synthetic_quality
from diffexpand.oracle import OracleCNN
from diffexpand.paths import DEFAULT_ORACLE


def real_test_images(n: int) -> torch.Tensor:
    """The first n Fashion-MNIST test images in [-1, 1], RGB: the reference for the Fréchet distance."""
    from diffexpand.data.fashion_mnist import load_fashion_mnist

    x, _ = load_fashion_mnist("test")
    x = torch.from_numpy(x[:n].copy()).float() / 127.5 - 1
    return x[:, None].repeat(1, 3, 1, 1)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folders", nargs="+")
    parser.add_argument("--oracle", default=str(DEFAULT_ORACLE))
    parser.add_argument("--real-test", type=int, default=2000,
                        help="Fashion-MNIST test images for the Fréchet distance (0: skip)")  # fmt: skip
    args = parser.parse_args(argv)
    oracle = OracleCNN.load(args.oracle)
    real = real_test_images(args.real_test) if args.real_test else None
    results = {}
    print(f"{'set':<28} {'images':>7} {'faithfulness':>13} {'diversity':>10} {'Fréchet':>8}")
    for folder in args.folders:
        images, labels = load_synthetic(folder)
        result = synthetic_quality(oracle, images, labels, real)
        (Path(folder) / "quality.json").write_text(json.dumps(result, indent=2) + "\n")
        fd = f"{result['frechet_distance']:8.3f}" if "frechet_distance" in result else f"{'-':>8}"
        print(f"{Path(folder).name:<28} {result['images']:>7} {result['faithfulness']:>13.3f} "
              f"{result['diversity']:>10.3f} {fd}")  # fmt: skip
        results[folder] = result
    return results


if __name__ == "__main__":
    main()
