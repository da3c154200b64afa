"""Choosing among concept runs by how near their samples lie to each class's own few shots."""

from __future__ import annotations

import json

import pytest
import torch

from diffexpand.concepts.selection import choose_run, class_prototypes, prototype_agreement


def _shots() -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes, two shots each, around the three axes of a 3-D feature space."""
    axes = torch.eye(3)
    features = torch.cat([axes + 0.05, axes - 0.05])
    return features, torch.tensor([0, 1, 2, 0, 1, 2])


def test_a_class_whose_samples_look_like_another_class_gets_no_agreement():
    prototypes = class_prototypes(*_shots(), num_classes=3)
    # class 0's and 2's samples sit on their own axis; class 1's drifted onto class 2's (a shirt concept
    # drawing coats)
    samples = torch.tensor([[1.0, 0, 0], [0.9, 0.1, 0], [0, 0.1, 1], [0, 0, 1], [0, 0, 1], [0.1, 0, 0.9]])
    agreement = prototype_agreement(samples, torch.tensor([0, 0, 1, 1, 2, 2]), prototypes)
    assert agreement.tolist() == [1.0, 0.0, 1.0]


def test_agreement_is_a_share_per_class():
    prototypes = class_prototypes(*_shots(), num_classes=3)
    samples = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0]])
    agreement = prototype_agreement(samples, torch.tensor([0, 0, 1, 1, 2, 2]), prototypes)
    assert agreement.tolist() == [0.5, 0.5, 0.0]


def test_features_of_any_length_are_compared_by_direction():
    features, labels = _shots()
    prototypes = class_prototypes(features * 100.0, labels, num_classes=3)
    samples = torch.tensor([[50.0, 0, 0], [0, 0.01, 0], [0, 0, 7]])
    assert prototype_agreement(samples, torch.tensor([0, 1, 2]), prototypes).tolist() == [1.0] * 3


def test_a_class_without_shots_or_samples_is_refused():
    features, labels = _shots()
    with pytest.raises(ValueError, match=r"no real shot for class\(es\) \[3\]"):
        class_prototypes(features, labels, num_classes=4)
    prototypes = class_prototypes(features, labels, num_classes=3)
    with pytest.raises(ValueError, match="no sample for class 2"):
        prototype_agreement(torch.eye(3)[:2], torch.tensor([0, 1]), prototypes)


def test_the_run_with_the_highest_mean_agreement_is_chosen():
    runs = [torch.tensor([0.9, 0.1, 0.9]), torch.tensor([0.8, 0.7, 0.8]), torch.tensor([0.9, 0.4, 0.9])]
    assert choose_run(runs) == 1


def test_equal_means_are_decided_by_the_worst_class_then_by_order():
    runs = [torch.tensor([1.0, 0.2]), torch.tensor([0.6, 0.6]), torch.tensor([0.6, 0.6])]
    assert choose_run(runs) == 1
    with pytest.raises(ValueError, match="no concept run"):
        choose_run([])


def test_the_tool_scores_every_run_on_the_same_noise_and_writes_its_choice(tiny_concepts, tmp_path):
    from tools import select_concepts

    out = tmp_path / "selection"
    args = [str(tiny_concepts), str(tiny_concepts), "--shots", "2", "--seed", "0", "--n", "2"]
    result = select_concepts.main([*args, "--steps", "2", "--out", str(out)])
    first, second = result["runs"]
    assert len(first["agreement"]) == 10 and first["agreement"] == second["agreement"]  # same noise
    assert result["chosen"] == 0
    written = json.loads((out / "selection.json").read_text())
    assert written["subset"] == {"dataset": "fashion_mnist", "shots": 2, "seed": 0}
    assert written["runs"][0]["folder"] == str(tiny_concepts)


def test_the_tool_names_a_run_that_is_no_concept_folder(tiny_concepts, tmp_path):
    from tools import select_concepts

    with pytest.raises(Exception, match="not-a-run"):
        select_concepts.main([str(tiny_concepts), str(tmp_path / "not-a-run"), "--shots", "2", "--seed", "0"])
