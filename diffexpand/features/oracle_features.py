"""The project's oracle CNN (or any `OracleCNN` folder) as a feature extractor. It measures the tiny
benchmark, so guiding or filtering with it inflates the oracle metrics: use it for tests and
diagnostics; benchmark runs use a separate extractor."""

from __future__ import annotations

from pathlib import Path

import torch

from diffexpand.cache import folder_fingerprint
from diffexpand.oracle_cnn import OracleCNN

from .base import FeatureExtractor


class OracleFeatures(FeatureExtractor):
    input_size = 32
    interpolation = "bilinear"

    def __init__(self, folder: str | Path):
        super().__init__()  # the oracle itself takes [-1, 1] images: mean 0.5, std 0.5 maps [0,1] back
        self.folder = Path(folder)
        self.model = OracleCNN.load(folder)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x)

    def fingerprint(self) -> str:
        return f"oracle:{folder_fingerprint(self.folder)}"
