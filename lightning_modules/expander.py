"""The expander: a predict-loop module that turns planned records into synthetic images."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from diffexpand.cache import folder_fingerprint
from diffexpand.concepts import apply_concepts, read_concepts
from diffexpand.methods import create_method
from diffexpand.models import load_sd_components
from diffexpand.models.vae import to_uint8
from diffexpand.paths import DEFAULT_PRIOR


class Expander(L.LightningModule):
    """Loads the diffusion model (hub id or local folder; default: the committed tiny prior), the
    concept folder when the method uses learned tokens, and delegates generation to the method."""

    def __init__(
        self,
        pretrained: str = str(DEFAULT_PRIOR),
        method: str = "txt2img",
        method_args: dict | None = None,
        concepts: str | None = None,
        dtype: str = "float32",
    ):
        super().__init__()
        self.save_hyperparameters()
        self.method = create_method(method, **(method_args or {}))
        if self.method.uses_concepts and not concepts:
            raise ValueError(
                f"method {method!r} uses learned concept tokens: set model.init_args.concepts to a concept "
                "folder (make one with `python train.py fit --config configs/concept.yaml`)"
            )
        if self.method.uses_concepts and not (Path(concepts) / "concepts.json").is_file():
            raise FileNotFoundError(
                f"concept folder {concepts} does not exist yet; make it with "
                "`python train.py fit --config configs/concept.yaml` (or set model.init_args.concepts)"
            )
        self.parts = None
        self.concepts = read_concepts(concepts) if concepts and self.method.uses_concepts else None

    def load_parts(self):
        """Load the model once (the datamodule needs it to build caches before `setup` runs)."""
        if self.parts is None:
            parts = load_sd_components(self.hparams.pretrained, dtype=getattr(torch, self.hparams.dtype))
            if self.concepts is not None:
                apply_concepts(
                    parts, self.concepts.folder, self.concepts.class_names, lora=self.method.concept_lora
                )
            self.parts = parts
            # Registered as submodules so Lightning moves them to the right device.
            self.unet, self.vae, self.text_encoder = parts.unet, parts.vae, parts.text_encoder
            if self.method.uses_real_features:
                self.feature_extractor = self.method.load_extractor()
        return self.parts

    def setup(self, stage: str) -> None:
        self.load_parts()

    def build_device(self) -> torch.device:
        """Where cache building runs: the device this process will predict on."""
        device = self.trainer.strategy.root_device if self._trainer is not None else self.device
        self.parts.to(device)
        if self.method.feature_extractor is not None:
            self.method.feature_extractor.to(device)
        return device

    def model_fingerprint(self) -> dict:
        source = Path(self.hparams.pretrained)
        model = folder_fingerprint(source) if source.is_dir() else self.hparams.pretrained
        concepts = folder_fingerprint(self.concepts.folder) if self.concepts else None
        return {
            "model": model,
            "dtype": self.hparams.dtype,
            "concepts": concepts,
            "lora": self.method.concept_lora,
        }

    def predict_step(self, batch: list[dict], batch_idx: int) -> dict:
        images = self.method.generate(self.parts, batch)
        public = [{k: v for k, v in r.items() if not isinstance(v, torch.Tensor)} for r in batch]
        return {"images": to_uint8(images), "records": public}
