"""Load Stable Diffusion parts from a hub id or a local diffusers-layout folder."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from diffexpand.paths import in_repo

from .components import SDComponents

_SUBFOLDERS = ("tokenizer", "text_encoder", "vae", "unet", "scheduler")


class ModelNotAvailableError(RuntimeError):
    """The requested model is neither a local folder nor in the Hugging Face cache."""


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}


def _not_available(source: str, cause: Exception) -> ModelNotAvailableError:
    mode = "offline (HF_HUB_OFFLINE=1)" if _offline() else "unreachable"
    return ModelNotAvailableError(
        f"Cannot load the diffusion model '{source}': it is not a local folder, the Hugging Face hub is "
        f"{mode}, and it is not in the local cache ({type(cause).__name__}: {str(cause).splitlines()[0]}). "
        "Pass a local diffusers-layout folder instead (one with model_index.json and the subfolders "
        f"{', '.join(_SUBFOLDERS)}), e.g. `--model.init_args.pretrained /path/to/stable-diffusion-v1-5`, "
        "or download it once on a machine with internet: "
        f"`huggingface-cli download {source} --local-dir /path/to/folder`."
    )


def _check_local_folder(folder: Path) -> None:
    missing = [name for name in _SUBFOLDERS if not (folder / name).is_dir()]
    if missing:
        raise ModelNotAvailableError(
            f"'{folder}' is not a diffusers-layout Stable Diffusion folder: missing subfolder(s) "
            f"{', '.join(missing)} (expected {', '.join(_SUBFOLDERS)})."
        )


def load_sd_components(
    pretrained: str | os.PathLike,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    revision: str | None = None,
    variant: str | None = None,
) -> SDComponents:
    """Tokenizer, text encoder, VAE, UNet and a DDIM scheduler from `pretrained`.

    `pretrained` is a hub id (e.g. "stable-diffusion-v1-5/stable-diffusion-v1-5") or a local folder.
    The scheduler is always DDIM, built from the model's own noise-schedule config, because every
    method here samples and inverts with DDIM.
    """
    source = str(in_repo(pretrained) or pretrained)  # "assets/tiny-fashion-prior" from any directory
    local = Path(source).expanduser()
    is_local = local.is_dir()
    if is_local:
        _check_local_folder(local)
        source = str(local)
    elif source.startswith((".", "/", "~")) or os.sep in source.strip("/").replace("/", "", 1):
        raise ModelNotAvailableError(f"Model folder '{pretrained}' does not exist.")
    kwargs = dict(revision=revision, local_files_only=_offline() or is_local)
    try:
        tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **kwargs)
        text_encoder = CLIPTextModel.from_pretrained(source, subfolder="text_encoder", dtype=dtype, **kwargs)
        vae = AutoencoderKL.from_pretrained(source, subfolder="vae", dtype=dtype, variant=variant, **kwargs)
        unet = UNet2DConditionModel.from_pretrained(
            source, subfolder="unet", dtype=dtype, variant=variant, **kwargs
        )
        scheduler = DDIMScheduler.from_pretrained(source, subfolder="scheduler", **kwargs)
    except (OSError, ValueError) as err:
        if is_local:
            raise
        raise _not_available(source, err) from err
    parts = SDComponents(tokenizer, text_encoder, vae, unet, scheduler)
    if torch.device(device) != unet.device:
        parts.to(device=device)
    for module in parts.modules.values():
        module.eval()
    return parts
