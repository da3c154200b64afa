"""Which real images an experiment may use: few-shot, long-tail or all — chosen by a seed.

Selection uses NumPy's PCG64 generator seeded with (seed, class index), which gives the same stream on
every platform, so "5-shot, seed 0" names the same images on any machine and does not change when
another class is added.
"""

from __future__ import annotations

import warnings

import numpy as np


def _class_rng(seed: int, label: int) -> np.random.Generator:
    return np.random.default_rng([seed, label])


def few_shot_indices(labels, shots: int, seed: int) -> np.ndarray:
    """`shots` indices per class (sorted), or every image of a class that has fewer."""
    labels = np.asarray(labels)
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    chosen, short = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < shots:
            short.append(f"class {int(label)} has {len(members)}")
        chosen.append(_class_rng(seed, int(label)).permutation(members)[:shots])
    if short:
        warnings.warn(
            f"few_shot with shots={shots}: {len(short)} class(es) have fewer images and keep all they have "
            f"({', '.join(short)})",
            stacklevel=2,
        )
    return np.sort(np.concatenate(chosen))


def long_tail_counts(num_classes: int, max_count: int, imbalance_factor: float) -> list[int]:
    """Class sizes decaying exponentially from `max_count` (class 0) to `max_count / IF` (last class),
    the profile of CIFAR-LT / ImageNet-LT (Cui et al. 2019)."""
    if imbalance_factor < 1:
        raise ValueError(f"imbalance_factor must be >= 1, got {imbalance_factor}")
    if num_classes == 1:
        return [max_count]
    return [max(1, int(max_count * imbalance_factor ** (-i / (num_classes - 1)))) for i in range(num_classes)]


def long_tail_indices(labels, imbalance_factor: float, seed: int, max_count: int | None = None) -> np.ndarray:
    """Indices for a long-tailed subset: class c keeps `long_tail_counts(...)[c]` seeded images."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    sizes = {int(c): int((labels == c).sum()) for c in classes}
    top = max_count or min(sizes.values())
    counts = long_tail_counts(len(classes), top, imbalance_factor)
    chosen = []
    for count, label in zip(counts, classes, strict=True):
        members = np.flatnonzero(labels == label)
        chosen.append(_class_rng(seed, int(label)).permutation(members)[: min(count, len(members))])
    return np.sort(np.concatenate(chosen))


def select_subset(
    labels,
    subset: str,
    shots: int = 5,
    imbalance_factor: float = 100.0,
    seed: int = 0,
    max_count: int | None = None,
) -> np.ndarray:
    if subset == "few_shot":
        return few_shot_indices(labels, shots, seed)
    if subset == "long_tail":
        return long_tail_indices(labels, imbalance_factor, seed, max_count)
    if subset == "all":
        return np.arange(len(labels))
    raise ValueError(f"subset must be 'few_shot', 'long_tail' or 'all', got {subset!r}")


def step_batch_indices(num_items: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """Dataset indices of training step `step`: the steps walk through a stream of seeded permutations
    (one per pass), so the batch of any step is known without replaying earlier ones — which makes
    resuming from a checkpoint continue exactly as an uninterrupted run."""
    start = step * batch_size
    out = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), num_items)
        perm = np.random.default_rng([seed, epoch]).permutation(num_items)
        out.extend(perm[offset : offset + batch_size - len(out)].tolist())
    return np.asarray(out)
