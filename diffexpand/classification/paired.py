"""Paired statistics of a benchmark row against the real-only baseline.

Accuracy varies more between few-shot subsets (seeds) than between methods on one subset, so a method
is compared with Original on the *same* subset: gain_s = acc(method, s) − acc(Original, s). The summary
is the mean and sample standard deviation of those gains over seeds and the number of seeds where the
method beats Original (a tie is not a win), and a gain is also read as a share of the ceiling's gain
(the same number of extra *real* images).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PairedGains:
    gains: dict[int, float]  # seed -> method accuracy − Original accuracy on that seed
    mean: float
    std: float | None  # sample standard deviation (n − 1); None with one seed
    wins: int  # seeds where the method is strictly above Original

    @property
    def seeds(self) -> int:
        return len(self.gains)


def _checked_accuracies(accuracies: Mapping[int, float], what: str) -> dict[int, float]:
    if not accuracies:
        raise ValueError(f"{what}: no accuracies (one per seed are needed)")
    for seed, acc in accuracies.items():
        if not isinstance(acc, int | float) or not math.isfinite(acc):
            raise ValueError(f"{what}: accuracy of seed {seed} is {acc!r}, not a finite number")
    return dict(accuracies)


def paired_gains(method: Mapping[int, float], original: Mapping[int, float]) -> PairedGains:
    """Gains of `method` over `original`, both {seed: accuracy}, on the seeds they share; each must
    have every seed of the other, since an unpaired seed would bias the mean."""
    method = _checked_accuracies(method, "method")
    original = _checked_accuracies(original, "Original")
    if set(method) != set(original):
        raise ValueError(
            f"paired gains need the same seeds: method has {sorted(method)}, Original {sorted(original)}"
        )
    gains = {seed: method[seed] - original[seed] for seed in sorted(method)}
    values = list(gains.values())
    std = statistics.stdev(values) if len(values) > 1 else None
    return PairedGains(gains, statistics.mean(values), std, sum(g > 0 for g in values))


def pooled_within_std(groups: Mapping[object, Sequence[float]]) -> float | None:
    """The pooled standard deviation within groups: sqrt(sum of (n_i − 1)·s_i² / sum of (n_i − 1)).

    With the runs of one subset as a group (its classifier seeds), it is the noise of one run's gain with the
    subset held fixed: what a larger evaluation split or more classifier seeds can shrink, which the spread
    over subsets mixes with how much the subsets differ. None when no group has two values."""
    squares, freedom = 0.0, 0
    for key, values in groups.items():
        values = list(values)
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            raise ValueError(f"group {key!r}: values {values!r} are not all finite numbers")
        if len(values) > 1:
            squares += (len(values) - 1) * statistics.variance(values)
            freedom += len(values) - 1
    return math.sqrt(squares / freedom) if freedom else None


def share_of_ceiling(gain: float, ceiling_gain: float) -> float | None:
    """`gain` as a fraction of the ceiling's gain; None when the ceiling gains nothing (no share of
    nothing means anything)."""
    if not math.isfinite(gain) or not math.isfinite(ceiling_gain):
        raise ValueError(f"gains must be finite numbers, got {gain!r} and ceiling {ceiling_gain!r}")
    return gain / ceiling_gain if ceiling_gain > 0 else None


def paired_gains_per_class(
    method: Mapping[int, Mapping[str, float]], original: Mapping[int, Mapping[str, float]]
) -> dict[str, float]:
    """Per class, the mean over seeds of (method − Original) accuracy on that class, both
    {seed: {class name: accuracy}}: where a row's gain (or loss) comes from. Same seeds and classes
    are required, as for `paired_gains`; a class some run did not evaluate (accuracy None) has None."""
    if set(method) != set(original) or not method:
        raise ValueError(
            f"per-class gains need the same seeds: method has {sorted(method)}, Original {sorted(original)}"
        )
    classes = list(next(iter(original.values())))
    for seed in method:
        if list(method[seed]) != classes or list(original[seed]) != classes:
            raise ValueError(f"seed {seed}: the classes differ between the runs ({list(method[seed])})")
    gains = {}
    for c in classes:
        runs = [run[s][c] for run in (method, original) for s in method]
        gains[c] = (
            None
            if any(a is None for a in runs)
            else paired_gains({s: method[s][c] for s in method}, {s: original[s][c] for s in method}).mean
        )
    return gains
