"""Paired statistics of a benchmark row against Original: gains per seed, mean ± std, wins, share of
the ceiling's gain — on hand-made accuracies."""

import math

import pytest

from diffexpand.classification.paired import (
    paired_gains,
    paired_gains_per_class,
    pooled_within_std,
    share_of_ceiling,
)


def test_paired_gains_mean_std_and_wins():
    original = {0: 0.60, 1: 0.62, 2: 0.64}
    method = {2: 0.70, 0: 0.65, 1: 0.60}  # order does not matter: seeds pair by key
    paired = paired_gains(method, original)
    assert paired.gains == pytest.approx({0: 0.05, 1: -0.02, 2: 0.06})
    assert paired.mean == pytest.approx(0.03)
    assert paired.std == pytest.approx(math.sqrt((0.02**2 + 0.05**2 + 0.03**2) / 2))  # sample std (n − 1)
    assert paired.wins == 2 and paired.seeds == 3


def test_paired_gains_pair_by_seed_not_by_mean():
    """Seed-to-seed spread is larger than the method's effect: pairing shows a gain the means hide."""
    original = {0: 0.50, 1: 0.70, 2: 0.60}
    method = {0: 0.51, 1: 0.71, 2: 0.61}
    paired = paired_gains(method, original)
    assert paired.wins == 3 and paired.std == pytest.approx(0.0, abs=1e-12)
    assert paired.mean == pytest.approx(0.01)


def test_a_tie_is_not_a_win_and_one_seed_has_no_std():
    paired = paired_gains({0: 0.6}, {0: 0.6})
    assert paired.wins == 0 and paired.mean == 0.0 and paired.std is None


def test_paired_gains_refuse_unpaired_or_broken_accuracies():
    with pytest.raises(ValueError, match=r"method has \[0, 1\], Original \[0, 2\]"):
        paired_gains({0: 0.6, 1: 0.6}, {0: 0.5, 2: 0.5})
    with pytest.raises(ValueError, match="seed 1 is nan"):
        paired_gains({0: 0.6, 1: float("nan")}, {0: 0.5, 1: 0.5})
    with pytest.raises(ValueError, match="Original: no accuracies"):
        paired_gains({0: 0.6}, {})


def test_share_of_ceiling():
    assert share_of_ceiling(0.03, 0.06) == pytest.approx(0.5)
    assert share_of_ceiling(-0.03, 0.06) == pytest.approx(-0.5)
    assert share_of_ceiling(0.03, 0.0) is None and share_of_ceiling(0.03, -0.01) is None
    with pytest.raises(ValueError, match="finite"):
        share_of_ceiling(float("inf"), 0.06)


def test_per_class_gains_say_where_a_gain_comes_from():
    original = {0: {"top": 0.5, "boot": 0.9}, 1: {"top": 0.7, "boot": 0.8}}
    method = {1: {"top": 0.8, "boot": 0.8}, 0: {"top": 0.6, "boot": 0.7}}
    gains = paired_gains_per_class(method, original)
    assert list(gains) == ["top", "boot"]
    assert gains["top"] == pytest.approx(0.1) and gains["boot"] == pytest.approx(-0.1)
    unevaluated = {0: {"top": 0.6, "boot": None}, 1: method[1]}  # no boot in seed 0's evaluation
    assert paired_gains_per_class(unevaluated, original) == {"top": pytest.approx(0.1), "boot": None}
    with pytest.raises(ValueError, match="same seeds"):
        paired_gains_per_class({0: method[0]}, original)
    with pytest.raises(ValueError, match="classes differ"):
        paired_gains_per_class({0: {"top": 0.6}, 1: method[1]}, original)


def test_pooled_within_std_weights_each_group_by_its_degrees_of_freedom():
    # variances 2 (1 degree of freedom) and 3 (2): pooled (2 + 6) / 3; a lone value adds nothing
    assert pooled_within_std({0: [1.0, 3.0], 1: [2.0, 2.0, 5.0], 2: [9.0]}) == pytest.approx(math.sqrt(8 / 3))
    assert pooled_within_std({0: [1.0], 1: [4.0]}) is None  # no group has two values
    with pytest.raises(ValueError, match="group 1"):
        pooled_within_std({0: [1.0, 2.0], 1: [float("nan"), 1.0]})
