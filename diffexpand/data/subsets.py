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


# ---- the validation split and the real-image ceiling ---------------------------------------------
# Few-shot subsets the validation split never touches: every seed below RESERVED_SEEDS with at most
# RESERVED_SHOTS images per class. A few-shot subset of `shots` images is the first `shots` of its
# class's seeded permutation, so for one seed it is a prefix of the RESERVED_SHOTS subset: the union
# of the RESERVED_SHOTS subsets over the reserved seeds covers every reserved subset.
RESERVED_SEEDS = 10
RESERVED_SHOTS = 50
VALIDATION_PER_CLASS = 100
_VALIDATION_STREAM = 1  # third key word: streams apart from few_shot's (seed, label) streams
_CEILING_STREAM = 2


def reserved_few_shot_indices(labels) -> np.ndarray:
    """Every training image that some few-shot subset with seed < RESERVED_SEEDS and shots <=
    RESERVED_SHOTS selects (sorted)."""
    labels = np.asarray(labels)
    with warnings.catch_warnings():  # a class smaller than RESERVED_SHOTS: all of it is reserved
        warnings.simplefilter("ignore")
        subsets = [few_shot_indices(labels, RESERVED_SHOTS, seed) for seed in range(RESERVED_SEEDS)]
    return np.unique(np.concatenate(subsets))


def _seeded_pick(labels, per_class: int, excluded, key: list[int], what: str) -> np.ndarray:
    """`per_class` indices per class, drawn by a seeded permutation (stream `key + [label]`) of the
    class's images that are not in `excluded`; an error naming the class when it has too few."""
    labels = np.asarray(labels)
    if isinstance(per_class, bool) or not isinstance(per_class, int | np.integer) or per_class < 1:
        raise ValueError(f"{what}: per_class must be a whole number >= 1, got {per_class!r}")
    excluded = np.zeros(len(labels), bool) if excluded is None else np.isin(np.arange(len(labels)), excluded)
    chosen, short = [], []
    for label in np.unique(labels):
        free = np.flatnonzero((labels == label) & ~excluded)
        if len(free) < per_class:
            short.append(f"class {int(label)} has {len(free)}")
            continue
        rng = np.random.default_rng([*key, int(label)])
        chosen.append(rng.permutation(free)[:per_class])
    if short:
        raise ValueError(
            f"{what}: per_class={per_class} asks for more images than are available "
            f"({', '.join(short)} left after the exclusions)"
        )
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def validation_indices(labels, per_class: int = VALIDATION_PER_CLASS, seed: int = 0) -> np.ndarray:
    """The validation split carved from the training split: `per_class` images per class (sorted).

    The rule: among the training images that no few-shot subset with seed < RESERVED_SEEDS (10) and
    shots <= RESERVED_SHOTS (50) selects, a seeded permutation per class (PCG64 stream
    (seed, 1, class)) and its first `per_class` images. So it is disjoint from every such few-shot
    subset and from the test split (another file), `few_shot_indices` keeps selecting the images it
    always did, and a smaller `per_class` gives a prefix of a larger one. Too few free images in a class
    is an error naming the class.
    """
    reserved = reserved_few_shot_indices(labels)
    return _seeded_pick(labels, per_class, reserved, [seed, _VALIDATION_STREAM], "validation split")


def ceiling_indices(labels, subset, per_class: int, seed: int, excluded=None) -> np.ndarray:
    """The real images of a "Real xN" ceiling set: `per_class` training images per class outside the
    `subset` and `excluded` (the validation split), drawn by the subset's `seed` (PCG64 stream
    (seed, 2, class)), sorted. Too few free images in a class is an error naming the class."""
    labels = np.asarray(labels)
    out = np.union1d(np.asarray(subset, np.int64), np.asarray([] if excluded is None else excluded, np.int64))
    return _seeded_pick(labels, per_class, out, [seed, _CEILING_STREAM], "ceiling set")


def expanded_count(real_count: int, expansion_ratio: float, images_per_class: int | None = None) -> int:
    """Images an expansion makes for a class with `real_count` real images: `images_per_class` when
    given, else `expansion_ratio` times the real images (at least one)."""
    return images_per_class or max(1, round(expansion_ratio * real_count))
