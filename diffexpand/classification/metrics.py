"""Classification metrics beyond plain accuracy: long-tail splits and Waterbirds groups."""

from __future__ import annotations

import torch


def shot_splits(train_counts: list[int], many: int = 100, few: int = 20) -> dict[str, list[int]]:
    """Classes with more than `many` training images, `few`..`many`, and fewer than `few` (OLTR's
    convention, Liu et al. 2019)."""
    return {
        "many": [c for c, n in enumerate(train_counts) if n > many],
        "medium": [c for c, n in enumerate(train_counts) if few <= n <= many],
        "few": [c for c, n in enumerate(train_counts) if n < few],
    }


def per_class_accuracy(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C,) accuracy per class; NaN for a class absent from `labels`."""
    correct = torch.zeros(num_classes).index_add_(0, labels.cpu(), (preds == labels).float().cpu())
    count = torch.zeros(num_classes).index_add_(0, labels.cpu(), torch.ones(len(labels)))
    return correct / count


def split_accuracy(per_class: torch.Tensor, splits: dict[str, list[int]]) -> dict[str, float]:
    return {name: float(per_class[idx].nanmean()) for name, idx in splits.items() if idx}


def group_accuracy(preds: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor) -> dict[str, float]:
    """Accuracy per group id and the worst group (Waterbirds: group = 2·label + place)."""
    out = {}
    for g in sorted(set(groups.tolist())):
        mask = groups == g
        out[f"group_{g}"] = float((preds[mask] == labels[mask]).float().mean())
    out["worst_group"] = min(out.values())
    return out


def accuracy_per_class_from_confusion(confusion: list[list[int]]) -> list[float | None]:
    """Per true class (rows), the share predicted right; None for a class with no evaluated image."""
    return [row[c] / sum(row) if sum(row) else None for c, row in enumerate(confusion)]
