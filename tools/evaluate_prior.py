"""Measure the committed tiny prior and write its model card figures.

    python tools/evaluate_prior.py [--prior assets/tiny-fashion-prior-v3] [--oracle assets/fashion-oracle]
        [--out outputs/prior-quality/<prior folder name>] [--seed 0]

Prints and writes quality.json and samples.png into --out: oracle metaclass accuracy of
"a photo of a {metaclass}" samples (DDIM 25, CFG 7.5, 200 each), VAE PSNR on the test split, realism
(Fréchet distance in oracle features to the first 2,000 test images of: 500 other real test images,
the same with every second one mirrored, their VAE reconstructions, 500 metaclass samples in the real
class mix at each --realism-guidance), orientation agreement (per metaclass, the share of samples that face
the way real images do, beside the real images' own share), and,
for a prior trained on attribute captions (its folder has captioner.json), attribute accuracy: does
"a photo of a top, dark" give dark tops? The
committed prior's card figures are refreshed only when asked: `--out assets/tiny-fashion-prior-v3`
(`make prior` does).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image

from diffexpand.data.attributes import CAPTIONER_FILE, AttributeCaptioner
from diffexpand.data.fashion_mnist import METACLASSES, load_fashion_mnist, resize_uint8
from diffexpand.evaluation.prior_quality import (
    attribute_accuracy,
    metaclass_accuracy,
    orientation_agreement,
    realism,
    vae_reconstruction_psnr,
)
from diffexpand.models import load_sd_components
from diffexpand.oracle_cnn import OracleCNN
from diffexpand.paths import DEFAULT_ORACLE, DEFAULT_PRIOR


def default_out(prior) -> Path:
    """Under outputs/, named after the prior: never into the prior's folder, which may be committed."""
    return Path("outputs/prior-quality") / Path(prior).name


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prior", default=str(DEFAULT_PRIOR))
    parser.add_argument("--oracle", default=str(DEFAULT_ORACLE))
    parser.add_argument("--n", type=int, default=200, help="samples per metaclass")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--realism-n", type=int, default=500, help="images per realism set (0: skip)")
    parser.add_argument("--realism-guidance", type=float, nargs="+", default=[7.5, 3.0])
    parser.add_argument(
        "--attribute-n", type=int, default=50, help="samples per attribute word and metaclass"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="draws every sample's noise: another seed is another draw of the same figures (their noise)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="folder for quality.json / samples.png (default: outputs/prior-quality/<prior folder name>)",
    )
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else default_out(args.prior)
    parts = load_sd_components(args.prior)
    oracle = OracleCNN.load(args.oracle)

    start = time.perf_counter()
    accuracy, samples = metaclass_accuracy(parts, oracle, args.n, args.steps, args.guidance, seed=args.seed)
    sampling_seconds = time.perf_counter() - start

    images, labels = load_fashion_mnist("test")
    test = resize_uint8(images, 32).float().div(127.5).sub(1).expand(-1, 3, -1, -1)
    oracle_test_acc = (oracle(test).argmax(1) == torch.as_tensor(labels)).float().mean().item()
    result = {
        "metaclass_accuracy": accuracy,
        "metaclass_accuracy_mean": sum(accuracy.values()) / len(accuracy),
        "vae_psnr_test_db": vae_reconstruction_psnr(parts.vae, test),
        "oracle_test_accuracy": oracle_test_acc,
        "samples_per_metaclass": args.n,
        "ddim_steps": args.steps,
        "guidance_scale": args.guidance,
        "seed": args.seed,
        "sampling_seconds": round(sampling_seconds, 1),
    }
    # Real test images from 2,000 on: the realism reference (0-1,999) stays apart from what is compared.
    result["orientation_agreement"] = orientation_agreement(samples, test[2000:], labels[2000:])
    if args.realism_n:
        reference, held_out = test[:2000], test[2000 : 2000 + args.realism_n]
        result["realism_frechet"] = realism(
            parts,
            oracle,
            reference,
            held_out,
            args.realism_n,
            args.steps,
            tuple(args.realism_guidance),
            seed=args.seed,
        )
        result["realism_reference"] = "Fashion-MNIST test images 0-1999; held-out real images from 2000 on"
    if (Path(args.prior) / CAPTIONER_FILE).is_file() and args.attribute_n:
        captioner = AttributeCaptioner.load(args.prior)
        result["attribute_accuracy"] = attribute_accuracy(
            parts, captioner, args.attribute_n, args.steps, args.guidance, seed=args.seed
        )
    grid = torch.cat([samples[m][:12] for m in METACLASSES])
    grid = torch.nn.functional.interpolate((grid + 1) / 2, scale_factor=3, mode="nearest")
    out.mkdir(parents=True, exist_ok=True)
    save_image(make_grid(grid, nrow=12, padding=2, pad_value=1.0), out / "samples.png")
    (out / "quality.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    from diffexpand.cli import run_with_clear_errors  # an error of ours as one line, not a traceback

    run_with_clear_errors(main)
