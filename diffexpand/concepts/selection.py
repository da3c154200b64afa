"""Which of several concept runs learned its classes, judged with no label beyond the few shots.

On a small prior, concept learning can fail for one class and draw a neighbouring one instead (a shirt
concept that draws coats), and which class fails changes from run to run. The few real shots are all the
labels a user has, so the check asks, per class: what share of the learned prompt's samples lie nearest
(cosine, in a frozen feature space) to that class's prototype, the mean feature of its own shots? A run
is chosen by the mean of that share over classes; its worst class breaks ties.
"""

from __future__ import annotations

from pathlib import Path

import torch

FEATURE_BATCH = 64  # images per feature-extractor call


def class_prototypes(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, D) unit-length mean of each class's unit-length features."""
    features = torch.nn.functional.normalize(features.float(), dim=-1)
    labels = torch.as_tensor(labels).long()
    missing = [c for c in range(num_classes) if not (labels == c).any()]
    if missing:
        raise ValueError(f"no real shot for class(es) {missing}: a prototype needs at least one")
    means = torch.stack([features[labels == c].mean(0) for c in range(num_classes)])
    return torch.nn.functional.normalize(means, dim=-1)


def class_hit_rates(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes,) share of each class's samples predicted as that class."""
    labels = torch.as_tensor(labels).long()
    shares = []
    for c in range(num_classes):
        mine = labels == c
        if not mine.any():
            raise ValueError(f"no sample for class {c}: every class's learned prompt must be sampled")
        shares.append((predicted[mine] == c).float().mean())
    return torch.stack(shares)


def prototype_agreement(
    sample_features: torch.Tensor, sample_labels: torch.Tensor, prototypes: torch.Tensor
) -> torch.Tensor:
    """(num_classes,) share of each class's samples whose nearest prototype is their own class's."""
    samples = torch.nn.functional.normalize(sample_features.float(), dim=-1)
    return class_hit_rates((samples @ prototypes.T).argmax(1), sample_labels, len(prototypes))


def choose_run(agreements: list[torch.Tensor]) -> int:
    """Index of the run with the highest mean agreement; among equal means, the highest worst class."""
    if not agreements:
        raise ValueError("no concept run to choose from")
    keys = [(round(float(a.mean()), 6), float(a.min())) for a in agreements]
    return max(range(len(keys)), key=lambda i: (keys[i], -i))  # the first run among equals


@torch.no_grad()
def run_samples(folder: Path, concepts, n: int, steps: int, guidance: float, seed: int):
    """n samples of each class's learned prompt, the noise keyed by class name (the same for every run)."""
    from diffexpand.evaluation.prior_quality import generate_for_prompt
    from diffexpand.models import load_sd_components

    from .io import apply_concepts

    parts = load_sd_components(concepts.base_model)
    apply_concepts(parts, folder)
    images = [
        generate_for_prompt(parts, concepts.prompt(c), n, steps, guidance, seed, key=name)
        for c, name in enumerate(concepts.class_names)
    ]
    labels = torch.arange(len(images)).repeat_interleave(n)
    return torch.cat(images), labels


def read_runs(runs) -> list:
    """Every run's concepts.json, checked before anything is sampled: same classes in every run."""
    from .io import read_concepts

    read = [read_concepts(Path(folder)) for folder in runs]
    for folder, concepts in zip(runs[1:], read[1:], strict=True):
        if concepts.class_names != read[0].class_names:
            raise ValueError(
                f"{folder}: classes {concepts.class_names} differ from {runs[0]}'s {read[0].class_names}"
            )
    return read


def score_runs(
    runs, shot_images, shot_labels, n=40, steps=25, guidance=7.5, seed=0, extractor="timm", oracle=None
) -> dict:
    """Score every run on its learned prompts' samples; {"class_names", "runs": [{folder, agreement,
    mean, worst[, oracle]}], "chosen": index}. `oracle` (a classifier of the classes) adds its verdict
    per class, for diagnosis: the choice never reads it."""
    from diffexpand.features import build_extractor, embed_normalized

    read = read_runs(runs)
    class_names = read[0].class_names
    features = build_extractor(extractor).eval()
    shot_features = embed_normalized(features, shot_images, FEATURE_BATCH)
    prototypes = class_prototypes(shot_features, shot_labels, len(class_names))
    scored = []
    for folder, concepts in zip(runs, read, strict=True):
        images, labels = run_samples(Path(folder), concepts, n, steps, guidance, seed)
        agreement = prototype_agreement(embed_normalized(features, images, FEATURE_BATCH), labels, prototypes)
        row = {"folder": str(folder), "agreement": agreement.tolist()}
        row |= {"mean": float(agreement.mean()), "worst": float(agreement.min())}
        if oracle is not None:
            with torch.no_grad():
                verdict = torch.cat([oracle(chunk).argmax(1) for chunk in images.split(FEATURE_BATCH)])
            row["oracle"] = class_hit_rates(verdict, labels, len(class_names)).tolist()
        scored.append(row)
    chosen = choose_run([torch.tensor(r["agreement"]) for r in scored])
    return {"class_names": class_names, "runs": scored, "chosen": chosen}
