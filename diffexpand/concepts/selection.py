"""Which of several concept runs learned its classes, judged with no label beyond the few shots.

On a small prior, concept learning can fail for one class and draw a neighbouring one instead (a shirt
concept that draws coats), and which class fails changes from run to run. The few real shots are all the
labels a user has, so the check asks, per class: what share of the learned prompt's samples lie nearest
(cosine, in a frozen feature space) to that class's prototype, the mean feature of its own shots? A run
is chosen by the mean of that share over classes; its worst class breaks ties.
"""

from __future__ import annotations

import torch


def class_prototypes(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, D) unit-length mean of each class's unit-length features."""
    features = torch.nn.functional.normalize(features.float(), dim=-1)
    labels = torch.as_tensor(labels).long()
    missing = [c for c in range(num_classes) if not (labels == c).any()]
    if missing:
        raise ValueError(f"no real shot for class(es) {missing}: a prototype needs at least one")
    means = torch.stack([features[labels == c].mean(0) for c in range(num_classes)])
    return torch.nn.functional.normalize(means, dim=-1)


def prototype_agreement(
    sample_features: torch.Tensor, sample_labels: torch.Tensor, prototypes: torch.Tensor
) -> torch.Tensor:
    """(num_classes,) share of each class's samples whose nearest prototype is their own class's."""
    samples = torch.nn.functional.normalize(sample_features.float(), dim=-1)
    labels = torch.as_tensor(sample_labels).long()
    nearest = (samples @ prototypes.T).argmax(1)
    shares = []
    for c in range(len(prototypes)):
        mine = labels == c
        if not mine.any():
            raise ValueError(f"no sample for class {c}: every class's learned prompt must be sampled")
        shares.append((nearest[mine] == c).float().mean())
    return torch.stack(shares)


def choose_run(agreements: list[torch.Tensor]) -> int:
    """Index of the run with the highest mean agreement; among equal means, the highest worst class."""
    if not agreements:
        raise ValueError("no concept run to choose from")
    keys = [(round(float(a.mean()), 6), float(a.min())) for a in agreements]
    return max(range(len(keys)), key=lambda i: (keys[i], -i))  # the first run among equals
