"""Measure a tiny Fashion-MNIST CLIP folder and write its model-card figures.

    python tools/evaluate_clip.py [CLIP_FOLDER] [--out outputs/clip-quality/<CLIP folder name>] [--n N]

CLIP_FOLDER defaults to assets/tiny-fashion-clip. On the Fashion-MNIST test split (32 px RGB, the
pipeline's images): zero-shot accuracy with "a photo of a {fine name}", and the CLIP score (torchmetrics
`CLIPScore` through `clip_score_per_class`) of each image against its own class prompt and against the
next class's prompt, plus the mean over all wrong prompts and over each class's closest wrong prompt
(same score, batched). Prints and writes quality.json into --out; the committed CLIP's card figures
are refreshed only when asked: `--out assets/tiny-fashion-clip` (`make clip`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from diffexpand.data.fashion_mnist import CLASS_NAMES, load_fashion_mnist, resize_uint8
from diffexpand.evaluation.set_metrics import clip_score_per_class, loaded_clip
from diffexpand.evaluation.tiny_clip import EVAL_TEMPLATE, clip_score_matrix, zero_shot
from diffexpand.paths import REPO_ROOT

DEFAULT_CLIP = REPO_ROOT / "assets" / "tiny-fashion-clip"


def load_test_images(n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n` (all: None) test images as the pipeline sees them: 32 px RGB in [-1, 1]."""
    images, labels = load_fashion_mnist("test")
    images, labels = images[:n], labels[:n]
    x = resize_uint8(images, 32).float().div(127.5).sub(1).expand(-1, 3, -1, -1)
    return x, torch.as_tensor(labels)


def default_out(clip) -> Path:
    """Under outputs/, named after the CLIP folder: never into the folder measured, which may be committed."""
    return Path("outputs/clip-quality") / Path(clip).name


def evaluate(folder: str | Path, n: int | None = None) -> dict:
    from transformers import CLIPModel, CLIPProcessor

    if not Path(folder).is_dir():  # a mistyped folder would otherwise be taken for a hub id
        raise FileNotFoundError(f"{folder} is not a folder: give the CLIP folder to measure")
    folder = str(folder)
    try:
        model, processor = CLIPModel.from_pretrained(folder).eval(), CLIPProcessor.from_pretrained(folder)
    except Exception as err:
        from diffexpand.models.identity import raise_if_damaged

        raise_if_damaged(folder, err)
        raise
    images, labels = load_test_images(n)
    prompts = [EVAL_TEMPLATE.format(name) for name in CLASS_NAMES]
    start = time.perf_counter()
    zs = zero_shot(model, processor, images, labels, list(CLASS_NAMES))
    matrix = clip_score_matrix(model, processor, images, labels, prompts)
    loaded = loaded_clip(model, processor)  # the model checked above, not loaded again
    right = clip_score_per_class(images, labels, prompts, model=loaded)
    next_class = [prompts[(c + 1) % len(prompts)] for c in range(len(prompts))]
    wrong = clip_score_per_class(images, labels, next_class, model=loaded)
    off_diagonal = ~torch.eye(len(prompts), dtype=torch.bool)
    closest_wrong, closest_class = matrix.masked_fill(~off_diagonal, -1).max(1)  # scores are >= 0
    return {
        "test_images": len(labels),
        "prompt_template": EVAL_TEMPLATE,
        "zero_shot_accuracy": round(zs["accuracy"], 4),
        "zero_shot_accuracy_per_class": {k: round(v, 4) for k, v in zs["per_class"].items()},
        "clip_score_right_prompt": round(sum(right.values()) / len(right), 2),
        "clip_score_next_class_prompt": round(sum(wrong.values()) / len(wrong), 2),
        "clip_score_all_wrong_prompts": round(float(matrix[off_diagonal].mean()), 2),
        "clip_score_closest_wrong_prompt": round(float(closest_wrong.mean()), 2),
        "clip_score_per_class": {
            name: {
                "right": round(right[c], 2),
                "next_class": round(wrong[c], 2),
                "closest_wrong": round(float(closest_wrong[c]), 2),
                "closest_wrong_class": CLASS_NAMES[int(closest_class[c])],
            }
            for c, name in enumerate(CLASS_NAMES)
        },
        "seconds": round(time.perf_counter() - start, 1),
    }


def main(argv=None) -> dict:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("clip", nargs="?", default=str(DEFAULT_CLIP), help="CLIP folder")
    help_out = "folder for quality.json (default: outputs/clip-quality/<CLIP folder name>)"
    parser.add_argument("--out", default=None, help=help_out)
    parser.add_argument("--n", type=int, default=None, help="first N test images (default: all 10,000)")
    args = parser.parse_args(argv)
    result = evaluate(args.clip, args.n)
    out = Path(args.out) if args.out else default_out(args.clip)
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    from diffexpand.cli import run_with_clear_errors  # an error of ours as one line, not a traceback

    run_with_clear_errors(main)
