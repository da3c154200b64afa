"""The oracle: a small CNN trained on all of Fashion-MNIST, used only to *measure* generated images
(is it the prompted class? how spread out are the features?), never to train on."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

WEIGHTS, CONFIG = "model.safetensors", "config.json"


def _conv(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class OracleCNN(nn.Module):
    """RGB or grayscale images in [-1, 1] (any size; resized to 32) -> logits over the classes."""

    def __init__(self, num_classes: int = 10, width: int = 32, feature_dim: int = 128):
        super().__init__()
        self.config = {"num_classes": num_classes, "width": width, "feature_dim": feature_dim}
        # One conv at full resolution, more at lower ones: the convs are cheap where the maps are small,
        # so the network stays small enough to train on a CPU (docs/measurements/2026-11-22.md).
        w = width
        stage1 = [*_conv(1, w), nn.MaxPool2d(2)]  # 32 -> 16
        stage2 = [*_conv(w, 2 * w), nn.MaxPool2d(2)]  # 16 -> 8
        stage3 = [*_conv(2 * w, 4 * w), *_conv(4 * w, 4 * w), nn.MaxPool2d(2)]  # 8 -> 4
        self.body = nn.Sequential(*stage1, *stage2, *stage3)
        self.neck = nn.Sequential(nn.Flatten(), nn.Linear(4 * width * 16, feature_dim), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(feature_dim, num_classes))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, feature_dim): the space the diversity metrics are measured in."""
        x = images.mean(1, keepdim=True) if images.shape[1] == 3 else images  # Fashion-MNIST is gray
        if x.shape[-1] != 32:
            x = nn.functional.interpolate(x, size=(32, 32), mode="bilinear", antialias=True)
        return self.neck(self.body(x))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))

    def save(self, folder: str | Path, extra: dict | None = None) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, folder / WEIGHTS)
        (folder / CONFIG).write_text(json.dumps({**self.config, **(extra or {})}, indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu") -> OracleCNN:
        """The oracle saved in `folder`; a damaged or mismatched file stops with an error naming it."""
        folder = Path(folder)
        if not (folder / WEIGHTS).is_file():
            raise FileNotFoundError(f"no oracle at {folder} (expected {WEIGHTS} and {CONFIG})")
        config = _read_config(folder / CONFIG)
        model = cls(**config)
        state = _read_weights(folder / WEIGHTS, device)
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            problem = str(err).strip().splitlines()[-1].strip()
            raise ValueError(
                f"{folder / WEIGHTS} does not fit the oracle {folder / CONFIG} describes ({problem}); "
                f"{_remedy(folder)}"
            ) from err
        return model.to(device).eval()


def _remedy(path: Path) -> str:
    from diffexpand.models.identity import how_to_replace

    return how_to_replace(path)


def _read_config(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (the oracle's settings); {_remedy(path)}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        from diffexpand.models.identity import corrupt_file_error

        raise corrupt_file_error(path, f"not valid JSON ({err})") from err
    keys = ("num_classes", "width", "feature_dim")
    if not isinstance(config, dict) or any(type(config.get(k)) is not int for k in keys):
        raise ValueError(f"{path} must give integers {', '.join(keys)}; {_remedy(path)}")
    return {k: config[k] for k in keys}


def _read_weights(path: Path, device) -> dict[str, torch.Tensor]:
    from diffexpand.models.identity import load_safetensors

    return load_safetensors(path, str(device))
