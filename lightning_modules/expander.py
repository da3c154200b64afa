"""The expander: a predict-loop module that turns planned records into synthetic images."""

from __future__ import annotations

import lightning as L
import torch

from diffexpand.methods import create_method
from diffexpand.models import load_sd_components
from diffexpand.models.vae import to_uint8
from diffexpand.paths import DEFAULT_PRIOR


class Expander(L.LightningModule):
    """Loads the diffusion model (hub id or local folder; default: the committed tiny prior) and
    delegates generation to the method named in the config."""

    def __init__(
        self,
        pretrained: str = str(DEFAULT_PRIOR),
        method: str = "txt2img",
        method_args: dict | None = None,
        dtype: str = "float32",
    ):
        super().__init__()
        self.save_hyperparameters()
        self.method = create_method(method, **(method_args or {}))
        self.parts = None

    def setup(self, stage: str) -> None:
        if self.parts is None:
            self.parts = load_sd_components(self.hparams.pretrained, dtype=getattr(torch, self.hparams.dtype))
            # Registered as submodules so Lightning moves them to the right device (this hook runs
            # before the strategy places the model).
            self.unet, self.vae, self.text_encoder = self.parts.unet, self.parts.vae, self.parts.text_encoder

    def predict_step(self, batch: list[dict], batch_idx: int) -> dict:
        images = self.method.generate(self.parts, batch)
        return {"images": to_uint8(images), "records": batch}
