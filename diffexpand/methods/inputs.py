"""What a method may build before generating, and the shared builders of such inputs.

A method prepares its own precomputed inputs (VAE latents of the real images, an inversion pool,
prototypes of real-image features, generated suffixes) from a `Workspace`: the real subset, the plan
context, the diffusion model as a service (`model`), and a disk cache keyed by what the input depends
on. The data module calls `method.prepare(workspace)` without knowing what it builds, and serves each
record with `method.inputs_for(record, prepared)`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm import tqdm

from diffexpand.cache import Check, Shape, cache_key, cached_json, cached_tensors
from diffexpand.finite import recompute_non_finite, refuse_non_finite
from diffexpand.progress import progress_wanted

from .common import PlanContext

log = logging.getLogger(__name__)

AUTOCAST_OFF = "autocast off"  # the fallback for a cache row that came out non-finite


def progress_bar(total: int, desc: str, unit: str) -> tqdm:
    """A stderr bar for a slow input build (VAE latents, inversions, features); it clears itself when
    done, leaving the cache's one-line "built … in N s" message."""
    return tqdm(
        total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, disable=not progress_wanted()
    )


def advancing(bar: tqdm, items: Iterable, size: Callable[[Any], int] = lambda _: 1) -> Iterator:
    """`items`, advancing `bar` by `size(item)` once the work on each item is done."""
    for item in items:
        yield item
        bar.update(size(item))


class ModelService(Protocol):
    """The diffusion model as input builders use it (diffexpand.models.runtime.DiffusionRuntime)."""

    parts: Any  # SDComponents

    def target_device(self) -> torch.device:
        """The device this process generates on (nothing is moved)."""

    def device(self) -> torch.device:
        """Where building runs: the device this process generates on (the model is moved there)."""

    def fingerprint(self) -> dict:
        """What the model's outputs depend on (weights, concept folder, arithmetic settings)."""

    def precision(self, device: torch.device):
        """The autocast context generation runs under."""


@dataclass
class RealImages:
    """The real subset the expansion starts from."""

    ids: list[str]
    pixels: Callable[[], torch.Tensor]  # (N, 3, H, W) in [-1, 1], in `ids` order, decoded on demand
    pil_images: Callable[[], list]  # the decoded images, for captioners
    source: list  # what identifies the pixels (dataset, root, image size), for cache keys
    image_size: int | None = None  # side of the square pixels, when known: cached latents are checked on it


@dataclass
class Workspace:
    ctx: PlanContext
    real: RealImages | None
    model: ModelService
    cache_dir: Path
    batch_size: int  # images per model call while building
    seed: int

    def require_real(self, method: str) -> RealImages:
        if self.real is None:
            raise ValueError(f"method {method!r} starts from real images: set data.init_args.real")
        return self.real

    def cached(
        self,
        kind: str,
        build: Callable[[], dict[str, torch.Tensor]],
        expect: dict[str, Shape] | None = None,
        **depends_on,
    ) -> dict:
        """`build()`'s tensors, cached on disk under a key made of `depends_on`. `expect` ({key: shape},
        None on a free axis) is what a usable entry holds: an entry on disk that does not, cannot be read
        or holds NaN / Inf is built again with a warning naming it (diffexpand.cache)."""
        return cached_tensors(self.cache_dir, kind, cache_key(**depends_on), build, expect)

    def cached_json(
        self, kind: str, build: Callable[[], object], expect: Check | None = None, **depends_on
    ) -> object:
        """Like `cached` for small JSON results; `expect` names what is wrong with a value read back."""
        return cached_json(self.cache_dir, kind, cache_key(**depends_on), build, expect)


class UsesFeatureExtractor:
    """For methods with an `extractor` setting (DistDiff, Real-Filter): the feature extractor, built on
    first use and frozen, and named in `modules()` so the caller places it with the diffusion model."""

    _extractor = None  # not a dataclass field: built from the `extractor` setting

    def feature_extractor(self) -> torch.nn.Module:
        from diffexpand.features import build_extractor

        if self._extractor is None:
            self._extractor = build_extractor(self.extractor).requires_grad_(False)
        return self._extractor

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"feature_extractor": self.feature_extractor()}


def by_id(ids: list[str], rows: torch.Tensor) -> dict[str, torch.Tensor]:
    return dict(zip(ids, rows, strict=True))


def real_latent_shape(real: RealImages, parts) -> Shape:
    """The shape of one real image's VAE latent: the VAE's channels, and the image side over the VAE's
    downsampling (which rounds down) when the image size is known."""
    side = real.image_size // parts.vae_scale_factor if real.image_size else None
    return (parts.vae.config.latent_channels, side, side)


def real_latents(ws: Workspace, method: str) -> dict[str, torch.Tensor]:
    """VAE latents of every real image, by id (cached; the key covers model, data and ids)."""
    from diffexpand.models.vae import encode_images

    real, model = ws.require_real(method), ws.model

    @torch.no_grad()  # setup runs outside the predict loop's inference mode
    def build():
        device = model.device()
        # the VAE runs in float32 outside autocast (diffexpand.models.vae): no lower-precision path to
        # fall back from, so a NaN / Inf latent is the image's own fault and is named
        chunks = real.pixels().split(ws.batch_size)
        with progress_bar(len(real.ids), "VAE latents of the real images", "img") as bar:
            chunks = advancing(bar, chunks, len)
            latents = torch.cat([encode_images(model.parts.vae, c.to(device)).float() for c in chunks])
        refuse_non_finite(latents, real.ids, "VAE latents", hint="")
        return {"latents": latents}

    expect = {"latents": (len(real.ids), *real_latent_shape(real, model.parts))}
    cached = ws.cached("latents", build, expect, model=model.fingerprint(), data=real.source, ids=real.ids)
    return by_id(real.ids, cached["latents"])


def real_features(ws: Workspace, method: str, extractor) -> tuple[dict[str, torch.Tensor], str]:
    """L2-normalised features of every real image under `extractor`, by id, and their cache key."""
    from diffexpand.features import normalized

    real, model = ws.require_real(method), ws.model
    key = cache_key(extractor=extractor.fingerprint(), data=real.source, ids=real.ids)

    @torch.no_grad()
    def build():
        device = model.device()
        images = real.pixels()
        with progress_bar(len(real.ids), "Features of the real images", "img") as bar:
            chunks = advancing(bar, images.split(ws.batch_size), len)
            feats = [normalized(extractor(chunk.to(device))) for chunk in chunks]

        def without_autocast(rows):
            with torch.autocast(device.type, enabled=False):
                return normalized(extractor(images[rows.cpu()].to(device)))

        features = recompute_non_finite(
            torch.cat(feats), without_autocast, real.ids, "Features", AUTOCAST_OFF
        )
        return {"features": features}

    expect = {"features": (len(real.ids), None)}  # the width is the extractor's
    features = cached_tensors(ws.cache_dir, "features", key, build, expect)["features"]
    return by_id(real.ids, features), key


def features_by_class(ws: Workspace, features: dict[str, torch.Tensor]) -> dict[int, torch.Tensor]:
    """{class: (n_c, D) features of its real images}, for classes that have real images."""
    members = enumerate(ws.ctx.source_ids)
    return {c: torch.stack([features[s] for s in ids]) for c, ids in members if ids}
