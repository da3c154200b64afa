"""How synthetic images enter training.

- replacement (Diff-II, DA-Fusion): each real sample is replaced, with probability p, by a synthetic
  sample of the same class, drawn fresh every epoch. The draw is a pure function of (seed, epoch,
  index), so it is the same on any machine, any number of workers and after a resume.
- concatenation (DistDiff, GIF): the real and synthetic sets are simply joined.
- synthetic only: every real sample is replaced by a same-class synthetic one (replacement at p = 1,
  the same draws), so no real image enters training: what the synthetic images carry on their own. A class
  with no synthetic image is an error (replacement would keep its real images).
"""

from __future__ import annotations

import numpy as np
import torch

MIXINGS = ("replace", "concat", "synthetic_only")


def replacement(seed: int, epoch: int, index: int, p: float, candidates: int) -> int | None:
    """Which synthetic candidate replaces real item `index` this epoch, or None (keep the real one)."""
    if candidates == 0 or p <= 0:
        return None
    rng = np.random.default_rng([seed, epoch, index])
    if rng.random() >= p:
        return None
    return int(rng.integers(candidates))


def augmentation_seed(seed: int, epoch: int, index: int) -> int:
    """The random-crop / flip seed of item `index` this epoch. Like `replacement`, a pure function of
    (seed, epoch, index): a run resumed from an epoch-end checkpoint sees the very images an uninterrupted
    run saw, whatever the number of loader workers."""
    return int(np.random.default_rng([seed, epoch, index, 1]).integers(2**62))


def soft_target(label: int, num_classes: int, soft_label: list[float] | None = None) -> torch.Tensor:
    """The training target: the method's soft label when it made one (normalised), else one-hot."""
    if soft_label is None:
        return torch.nn.functional.one_hot(torch.tensor(label), num_classes).float()
    target = torch.tensor(soft_label, dtype=torch.float32).clamp_min(0)
    total = target.sum()
    if not torch.isfinite(total) or total <= 0:
        raise ValueError(f"soft label {soft_label} does not sum to a positive number")
    return target / total
