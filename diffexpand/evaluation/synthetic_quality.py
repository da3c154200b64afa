"""Faithfulness and diversity of a synthetic set, measured with the oracle (the tiny benchmark's
stand-in for CLIP score and LPIPS, whose weights are not available offline):

- faithfulness: oracle accuracy — the share of images the oracle assigns to their label;
- diversity: mean pairwise Euclidean distance of L2-normalised oracle features between images of one
  class (0 = all identical, at most 2), averaged over classes;
- Fréchet distance between the oracle features of the synthetic set and of real images, when given.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from diffexpand.data.fashion_mnist import load_fashion_mnist, resize_uint8
from diffexpand.data.subsets import VALIDATION_PER_CLASS, validation_indices
from diffexpand.set_reader import read_nonempty_set

REFERENCE_SPLITS = ("validation", "test")


def fashion_mnist_test_images(n: int, size: int = 32) -> torch.Tensor:
    """The first n Fashion-MNIST test images in [-1, 1], RGB, at `size`. They take the path the prior's
    training images take (antialiased bilinear resize, rounded to uint8), and synthetic sets are read at
    the same size, so both reach the oracle the same way."""
    x, _ = load_fashion_mnist("test")
    return fashion_mnist_as_rgb(x[:n], size)


def fashion_mnist_reference_images(n: int, split: str = "validation", size: int = 32) -> torch.Tensor:
    """n real images for the Fréchet distance of a synthetic set, as `fashion_mnist_test_images` gives
    them. `validation` (the default): the first n of the validation split carved from the training split
    (`validation_indices`, disjoint from every few-shot subset), so a setting chosen by its set metrics
    is not chosen on the test split; at most its 1,000 images. `test`: the first n test images."""
    if split not in REFERENCE_SPLITS:
        raise ValueError(f"reference split must be one of {REFERENCE_SPLITS}, got {split!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of reference images must be a whole number >= 1, got {n!r}")
    if split == "test":
        return fashion_mnist_test_images(n, size)
    x, labels = load_fashion_mnist("train")
    held = VALIDATION_PER_CLASS * len(np.unique(labels))
    if n > held:
        raise ValueError(f"the validation split holds {held} images; asked for {n} reference images")
    # The whole split's indices, sorted, and their first n: Fashion-MNIST's training file is shuffled,
    # so a prefix holds every class in about equal share, and a smaller reference is a prefix of a larger.
    chosen = validation_indices(labels)[:n]
    return fashion_mnist_as_rgb(x[chosen], size)


def fashion_mnist_as_rgb(images: np.ndarray, size: int) -> torch.Tensor:
    """Fashion-MNIST uint8 images (N, 28, 28) as the models read real images: resized like the
    prior's training images, in [-1, 1], three channels."""
    return resize_uint8(images, size).float().div(127.5).sub(1).expand(-1, 3, -1, -1).contiguous()


def load_synthetic(folder: str | Path, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [-1, 1] (N, 3, size, size) and labels of a synthetic set folder. Images of another
    size are resized like the real reference images (`fashion_mnist_reference_images`): antialiased
    bilinear, rounded to uint8."""
    folder = Path(folder)
    checked = read_nonempty_set(folder)  # every line checked; images opened where they were found to lie
    images = []
    for i in range(len(checked)):
        image = torch.from_numpy(np.asarray(checked.image(i)).copy()).permute(2, 0, 1)
        if image.shape[-2:] != (size, size):
            image = resize_uint8(image[None], size)[0]
        images.append(image)
    labels = torch.tensor([r["label"] for r in checked.records])
    return torch.stack(images).float() / 127.5 - 1, labels


@torch.no_grad()
def oracle_outputs(oracle, images: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, L2-normalised features) of every image."""
    logits, feats = [], []
    for chunk in images.split(batch_size):
        f = oracle.features(chunk)
        logits.append(oracle.head(f))
        feats.append(torch.nn.functional.normalize(f, dim=1))
    return torch.cat(logits), torch.cat(feats)


def mean_pairwise_distance(features: torch.Tensor) -> float | None:
    """Mean distance between distinct images; None for fewer than two (undefined, and NaN is not JSON)."""
    n = len(features)
    if n < 2:
        return None
    d = torch.cdist(features.double(), features.double())
    return float(d.sum() / (n * (n - 1)))


def _mean_defined(values: list[float | None]) -> float | None:
    """The mean of the values that exist; None when none does (every class has a single image)."""
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (the FID formula)."""
    from scipy import linalg

    a, b = a.double().numpy(), b.double().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():
        # Fewer images than feature dimensions give a singular covariance; sqrtm's result is still the
        # estimate the FID formula uses (and the only one a small set allows), so the warning says nothing.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))


def synthetic_quality(
    oracle, images: torch.Tensor, labels: torch.Tensor, real_images: torch.Tensor | None = None
) -> dict:
    logits, feats = oracle_outputs(oracle, images)
    correct = (logits.argmax(1) == labels).float()
    classes = sorted(set(labels.tolist()))
    per_class = {
        c: {
            "faithfulness": float(correct[labels == c].mean()),
            "diversity": mean_pairwise_distance(feats[labels == c]),
            "images": int((labels == c).sum()),
        }
        for c in classes
    }
    result = {
        "faithfulness": float(correct.mean()),
        "diversity": _mean_defined([v["diversity"] for v in per_class.values()]),
        "images": len(labels),
        "per_class": per_class,
    }
    if real_images is not None:
        _, real_feats = oracle_outputs(oracle, real_images)
        result["frechet_distance"] = frechet_distance(feats, real_feats)
    return result


def evaluate_set(
    folder,
    oracle=None,
    class_prompts: list[str] | None = None,
    clip_model=None,
    lpips_net: str | torch.nn.Module | None = None,
    real_images: torch.Tensor | None = None,
) -> dict:
    """Every configured metric of one synthetic-set folder: oracle faithfulness / diversity / Fréchet
    distance (with `oracle`), CLIP score against the class prompts (with `clip_model`: a folder, hub id
    or (model, processor) loader), LPIPS diversity (with `lpips_net`: a backbone name or a built
    LPIPS module)."""
    from . import set_metrics

    images, labels = load_synthetic(folder)
    result: dict = {"images": len(labels)}
    if oracle is not None:
        result["oracle"] = synthetic_quality(oracle, images, labels, real_images)
    if clip_model is not None:
        if class_prompts is None:
            raise ValueError("CLIP score needs the class prompts")
        per_class = set_metrics.clip_score_per_class(images, labels, class_prompts, clip_model)
        result["clip_score"] = {"mean": float(np.mean(list(per_class.values()))), "per_class": per_class}
    if lpips_net is not None:
        model = set_metrics.build_lpips(lpips_net) if isinstance(lpips_net, str) else lpips_net
        per_class = set_metrics.lpips_diversity(images, labels, model)
        result["lpips_diversity"] = {"mean": float(np.mean(list(per_class.values()))), "per_class": per_class}
    return result
