"""Synthetic-set metrics the papers report: CLIP score of each image against its plain class prompt
(torchmetrics `CLIPScore`), diversity as mean pairwise LPIPS within a class (the `lpips` package,
AlexNet by default), and FID / KID against real images (torchmetrics, InceptionV3 features).

Each needs pretrained weights. Where they are absent (offline, as on the machines this project is
tested on) the metric stops with `MetricWeightsNotAvailable` naming exactly what to provide; the tiny
benchmark uses the oracle metrics of `synthetic_quality` instead.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch


class MetricWeightsNotAvailable(RuntimeError):
    pass


class _ClipFeatures(torch.nn.Module):
    """transformers 5 returns model outputs from `get_*_features`; torchmetrics 1.9 expects tensors."""

    def __init__(self, clip):
        super().__init__()
        self.clip, self.config = clip, clip.config

    @staticmethod
    def _tensor(out):
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def get_image_features(self, *args, **kwargs):
        return self._tensor(self.clip.get_image_features(*args, **kwargs))

    def get_text_features(self, *args, **kwargs):
        return self._tensor(self.clip.get_text_features(*args, **kwargs))


def _uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float (B, 3, H, W) -> uint8, what CLIPScore and FID take."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def loaded_clip(model, processor) -> Callable:
    """A loader for `clip_score_per_class` of a transformers CLIP model and processor already loaded."""
    return lambda: (_ClipFeatures(model), processor)


def load_clip(path: str) -> tuple[torch.nn.Module, object]:
    """(model, processor) of a transformers CLIP folder or hub id, in the form torchmetrics'
    `CLIPScore` takes from a loader; `MetricWeightsNotAvailable` when it cannot be loaded."""
    from transformers import CLIPModel, CLIPProcessor

    if not Path(path).is_dir() and path.startswith(("/", ".", "~", "assets/", "outputs/")):
        # a folder that is not there; as a hub id it would be retried against the network for a minute
        raise MetricWeightsNotAvailable(f"CLIP score needs a CLIP model; there is no folder {path!r}")
    try:
        return _ClipFeatures(CLIPModel.from_pretrained(path).eval()), CLIPProcessor.from_pretrained(path)
    except Exception as err:
        from diffexpand.models.identity import raise_if_damaged

        raise_if_damaged(path, err)  # a damaged file is an error to fix, not weights that are absent
        if not isinstance(err, OSError):
            raise
        raise MetricWeightsNotAvailable(
            f"CLIP score needs a CLIP model; {path!r} could not be loaded ({err}). Download e.g. "
            "openai/clip-vit-large-patch14 where there is network and pass its local folder."
        ) from err


@torch.no_grad()
def clip_score_per_class(
    images: torch.Tensor,
    labels: torch.Tensor,
    prompts: list[str],
    model: str | Callable = "openai/clip-vit-large-patch14",
) -> dict[int, float]:
    """Mean CLIP score per class of images (in [-1, 1]) against their class prompt. `model`: a hub id
    or local folder of a transformers CLIP model, or a callable returning (model, processor) (e.g. a
    `load_clip` result loaded earlier)."""
    from torchmetrics.multimodal.clip_score import CLIPScore

    # torchmetrics accepts only its own list of ids as a string, or a loader like this
    loader = (lambda: load_clip(model)) if isinstance(model, str) else model
    # one process measures the whole set: no gathering across DDP ranks (the others are not computing)
    metric = CLIPScore(model_name_or_path=loader, sync_on_compute=False)
    out = {}
    for c in sorted(set(labels.tolist())):
        metric.reset()
        chunk = _uint8(images[labels == c])
        with warnings.catch_warnings():
            # torchmetrics tokenizes with padding=True only; a tokenizer that keeps a max_length (as
            # CLIP's do) then notes it is unused. Class prompts are far shorter than any CLIP context.
            warnings.filterwarnings("ignore", message="`max_length` is ignored when `padding`=`True`")
            for batch in chunk.split(64):
                metric.update(list(batch), [prompts[c]] * len(batch))
        out[c] = float(metric.compute())
    return out


def build_lpips(net: str = "alex", random_backbone: bool = False):
    """LPIPS with its calibrated linear heads (shipped in the `lpips` package) on an ImageNet backbone
    from torchvision; `random_backbone` skips the backbone weights (tests only)."""
    import lpips

    try:
        return lpips.LPIPS(net=net, pretrained=True, pnet_rand=random_backbone, verbose=False).eval()
    except (OSError, RuntimeError) as err:  # torchvision's download fails offline
        raise MetricWeightsNotAvailable(
            f"LPIPS needs torchvision's ImageNet {net} weights ({err}); put the checkpoint torchvision "
            "names (e.g. alexnet-owt-7be5be79.pth) in $TORCH_HOME/hub/checkpoints"
        ) from err


@torch.no_grad()
def lpips_diversity(
    images: torch.Tensor, labels: torch.Tensor, model, max_pairs: int = 300, seed: int = 0
) -> dict[int, float]:
    """Mean pairwise LPIPS between images of each class (at most `max_pairs` seeded pairs per class)."""
    out = {}
    for c in sorted(set(labels.tolist())):
        x = images[labels == c].float()
        pairs = list(itertools.combinations(range(len(x)), 2))
        if not pairs:
            continue
        if len(pairs) > max_pairs:
            keep = np.random.default_rng([seed, c]).choice(len(pairs), max_pairs, replace=False)
            pairs = [pairs[i] for i in sorted(keep)]
        a = torch.tensor([p[0] for p in pairs])
        b = torch.tensor([p[1] for p in pairs])
        d = torch.cat([model(x[i], x[j]).flatten() for i, j in zip(a.split(64), b.split(64), strict=True)])
        out[c] = float(d.mean())
    return out


@torch.no_grad()
def fid_kid(
    real: torch.Tensor,
    fake: torch.Tensor,
    feature: int | torch.nn.Module = 2048,
    weights_path: str | None = None,
    kid_subset: int = 50,
) -> dict[str, float]:
    """FID and KID between real and synthetic images (both in [-1, 1]). `feature`: an InceptionV3
    feature size (needs torch-fidelity's weights: `weights_path` offline) or any module mapping
    uint8 images to features."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    subset = max(2, min(kid_subset, len(real), len(fake)))
    try:
        if isinstance(feature, torch.nn.Module):
            fid, kid = (
                FrechetInceptionDistance(feature=feature),
                KernelInceptionDistance(feature=feature, subset_size=subset),
            )
        else:
            fid = FrechetInceptionDistance(feature=feature, feature_extractor_weights_path=weights_path)
            kid = KernelInceptionDistance(
                feature=feature, subset_size=subset, feature_extractor_weights_path=weights_path
            )
    except (OSError, RuntimeError, ModuleNotFoundError) as err:
        raise MetricWeightsNotAvailable(
            f"FID/KID need InceptionV3 weights ({err}); download torch-fidelity's "
            "pt_inception-2015-12-05-6726825d.pth and pass it as weights_path"
        ) from err
    for images, is_real in ((real, True), (fake, False)):
        for batch in _uint8(images).split(64):
            fid.update(batch, real=is_real)
            kid.update(batch, real=is_real)
    kid_mean, kid_std = kid.compute()
    return {"fid": float(fid.compute()), "kid": float(kid_mean), "kid_std": float(kid_std)}
