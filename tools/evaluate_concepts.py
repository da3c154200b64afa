"""Measure a concept folder: oracle fine-class accuracy, learned prompt versus metaclass prompt.

    python tools/evaluate_concepts.py outputs/concepts/fashion_mnist-5shot-seed0 [--n 200] [--out DIR]

Prints the table and writes quality.json and samples.png into --out (default:
outputs/concept-quality/<concept folder name>; a committed folder's figures are refreshed only when
--out names it).
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image

from diffexpand.concepts import apply_concepts, read_concepts
from diffexpand.evaluation.concept_quality import fine_class_accuracy
from diffexpand.models import load_sd_components
from diffexpand.oracle_cnn import OracleCNN
from diffexpand.paths import DEFAULT_ORACLE


def default_out(concepts) -> Path:
    """Under outputs/, named after the concept folder: never into the folder, which may be committed."""
    return Path("outputs/concept-quality") / Path(concepts).name


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("concepts", help="concept folder written by the concept learner")
    parser.add_argument(
        "--prior",
        default=None,
        help="the prior to load (default: the one concepts.json says they were learned on)",
    )
    parser.add_argument("--oracle", default=str(DEFAULT_ORACLE))
    parser.add_argument("--n", type=int, default=200, help="images per class and prompt")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--no-base", action="store_true", help="skip the base-model (no LoRA) baseline")
    parser.add_argument(
        "--out", default=None, help="folder for quality.json / samples.png (default: see above)"
    )
    args = parser.parse_args(argv)
    folder = Path(args.concepts)
    out = Path(args.out) if args.out else default_out(folder)
    concepts = read_concepts(folder)
    parts = load_sd_components(args.prior or concepts.base_model)
    base_parts = None if args.no_base else copy.deepcopy(parts)  # loaded and checked once
    apply_concepts(parts, folder)  # refuses concepts learned on another prior than the one loaded
    result = fine_class_accuracy(
        parts, OracleCNN.load(args.oracle), concepts, args.n, args.steps, args.guidance, base_parts=base_parts
    )
    samples = result.pop("samples")
    base = "metaclass_prompt_base_model"
    print(f"{'class':<14} {'learned prompt':>15} {'metaclass prompt':>17} {'metaclass, base model':>22}")
    for name, row in result["per_class"].items():
        b = f"{row[base]:>22.3f}" if base in row else f"{'-':>22}"
        print(f"{name:<14} {row['learned_prompt']:>15.3f} {row['metaclass_prompt']:>17.3f} {b}")
    b = f"{result[base + '_mean']:>22.3f}" if base_parts is not None else f"{'-':>22}"
    print(f"{'mean':<14} {result['learned_prompt_mean']:>15.3f} {result['metaclass_prompt_mean']:>17.3f} {b}")
    result |= {"images_per_class": args.n, "ddim_steps": args.steps, "guidance_scale": args.guidance}
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.json").write_text(json.dumps(result, indent=2) + "\n")
    # one row per class: 8 learned-prompt samples, then 8 metaclass-prompt samples (same seeds)
    grid = torch.cat([torch.cat([a[:8], b[:8]]) for a, b in samples.values()])
    grid = torch.nn.functional.interpolate((grid.clamp(-1, 1) + 1) / 2, scale_factor=2, mode="nearest")
    save_image(make_grid(grid, nrow=16, padding=2, pad_value=1.0), out / "samples.png")
    return result


if __name__ == "__main__":
    from diffexpand.cli import run_with_clear_errors  # an error of ours as one line, not a traceback

    run_with_clear_errors(main)
