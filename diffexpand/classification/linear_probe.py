"""A linear probe: softmax regression on frozen image features, trained on real images and a synthetic
set with a weight for each, and read on a held-out split.

It is the cheap second opinion on a set (seconds per fit once the features exist) and the strong-feature
regime: frozen ImageNet features of five images per class already classify Fashion-MNIST far better than
a network trained from scratch on them, so a set that still adds something there adds more than
pixels a small network could not see. Zero initialisation and full-batch L-BFGS make a fit a function of
its data alone (no seed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ProbeData:
    """Features (N, D), targets (N, C) with rows that are probabilities (one-hot for a plain label, a
    method's soft label where it made one), and this part's weight in the loss."""

    features: torch.Tensor
    targets: torch.Tensor
    weight: float

    def __post_init__(self):
        if self.features.ndim != 2 or self.targets.ndim != 2 or len(self.features) != len(self.targets):
            raise ValueError(
                f"features (N, D) and targets (N, C) must have one row per image, got "
                f"{tuple(self.features.shape)} and {tuple(self.targets.shape)}"
            )
        if not len(self.features):
            raise ValueError("a probe part needs at least one image")
        if not (self.weight > 0):
            raise ValueError(f"a part's weight must be > 0, got {self.weight!r}")
        if not torch.isfinite(self.features).all():
            raise ValueError("features hold NaN or Inf")
        sums = self.targets.sum(1)
        if (self.targets < 0).any() or not torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
            raise ValueError("every target row must be a probability vector (>= 0, summing to 1)")


def fit_linear_probe(
    parts: Sequence[ProbeData], weight_decay: float = 1e-3, max_iter: int = 200
) -> torch.nn.Linear:
    """Minimise sum_p weight_p * mean cross-entropy(part p) + weight_decay * |W|^2 (the bias is not
    decayed); parts must agree on the feature and class dimensions."""
    if not parts:
        raise ValueError("nothing to fit: no probe parts")
    dims = {(p.features.shape[1], p.targets.shape[1]) for p in parts}
    if len(dims) != 1:
        raise ValueError(f"probe parts disagree on (feature, class) dimensions: {sorted(dims)}")
    ((features, classes),) = dims
    probe = torch.nn.Linear(features, classes)
    torch.nn.init.zeros_(probe.weight)
    torch.nn.init.zeros_(probe.bias)
    optimizer = torch.optim.LBFGS(probe.parameters(), lr=1, max_iter=max_iter, line_search_fn="strong_wolfe")
    data = [(p.features.float(), p.targets.float(), float(p.weight)) for p in parts]

    def loss_and_grad():
        optimizer.zero_grad()
        loss = weight_decay * probe.weight.pow(2).sum()
        for x, targets, weight in data:
            loss = loss + weight * -(targets * torch.log_softmax(probe(x), -1)).sum(-1).mean()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(loss_and_grad)
    return probe.requires_grad_(False)


@torch.no_grad()
def probe_accuracy(
    probe: torch.nn.Linear, features: torch.Tensor, labels: torch.Tensor
) -> tuple[float, list]:
    """Top-1 accuracy in % and the accuracy of each class in % (None for a class with no image)."""
    predicted = probe(features.float()).argmax(1)
    right = predicted == labels
    per_class = [
        right[labels == c].float().mean().item() * 100 if (labels == c).any() else None
        for c in range(probe.out_features)
    ]
    return right.float().mean().item() * 100, per_class
