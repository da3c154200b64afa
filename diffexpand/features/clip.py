"""CLIP image encoders as feature extractors: open_clip (model name + pretrained tag or local
checkpoint file) or transformers (`CLIPVisionModelWithProjection` from a hub id or local folder).
Resize and normalisation come from the model's own preprocessing config."""

from __future__ import annotations

from pathlib import Path

import torch

from diffexpand.cache import cache_key, folder_fingerprint
from diffexpand.models.loading import ModelNotAvailableError

from .base import FeatureExtractor


class OpenClipFeatures(FeatureExtractor):
    def __init__(self, model_name: str = "ViT-B-32", pretrained: str | None = "openai"):
        import open_clip

        try:
            model = open_clip.create_model(model_name, pretrained=pretrained, device="cpu")
        except (RuntimeError, OSError, ValueError) as err:
            raise ModelNotAvailableError(
                f"cannot load open_clip {model_name!r} with pretrained={pretrained!r} ({err}); pass a local "
                "checkpoint file as `pretrained`"
            ) from err
        cfg = model.visual.preprocess_cfg
        super().__init__(cfg["mean"], cfg["std"])
        size = cfg["size"]
        self.input_size = int(size if isinstance(size, int) else size[-1])
        self.interpolation = "bicubic" if cfg.get("interpolation", "bicubic") == "bicubic" else "bilinear"
        self.model = model.visual.eval()
        source = Path(pretrained) if pretrained else None
        detail = source.stat().st_size if source and source.is_file() else pretrained
        self._fingerprint = cache_key(model=model_name, pretrained=detail)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def fingerprint(self) -> str:
        return f"open_clip:{self._fingerprint}"


class TransformersClipFeatures(FeatureExtractor):
    def __init__(self, path: str = "openai/clip-vit-large-patch14"):
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        try:
            processor = CLIPImageProcessor.from_pretrained(path)
            model = CLIPVisionModelWithProjection.from_pretrained(path)
        except Exception as err:
            from diffexpand.models.identity import raise_if_damaged

            raise_if_damaged(path, err)
            if not isinstance(err, OSError):
                raise
            raise ModelNotAvailableError(
                f"cannot load the CLIP vision model {path!r} ({err}); download it where there is network "
                "and pass the local folder"
            ) from err
        super().__init__(processor.image_mean, processor.image_std)
        crop = processor.crop_size  # a dict, or a SizeDict in transformers 5
        self.input_size = int(crop if isinstance(crop, int) else crop["height"])
        self.model = model.eval()
        self._fingerprint = folder_fingerprint(path) if Path(path).is_dir() else path

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).image_embeds

    def fingerprint(self) -> str:
        return f"clip:{self._fingerprint}"
