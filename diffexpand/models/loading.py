"""Load Stable Diffusion parts from a hub id or a local diffusers-layout folder."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from diffexpand.paths import in_repo

from .components import SDComponents
from .identity import (
    CorruptModelFileError,
    how_to_replace,
    model_identity,
    raise_if_damaged,
    snapshot_folder,
)

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
        f"`hf download {source} --local-dir /path/to/folder`."
    )


def _check_local_folder(folder: Path) -> None:
    missing = [name for name in _SUBFOLDERS if not (folder / name).is_dir()]
    if missing:
        raise ModelNotAvailableError(
            f"'{folder}' is not a diffusers-layout Stable Diffusion folder: missing subfolder(s) "
            f"{', '.join(missing)} (expected {', '.join(_SUBFOLDERS)})."
        )


def _load_part(cls, source: str, folder: Path | None, subfolder: str, kwargs: dict):
    """`cls.from_pretrained` of one part; a failure caused by a damaged file of that part (bad JSON, a
    truncated or garbled weights file) becomes one error naming the file. The libraries' own messages
    often lack the path ("header too large"), so the part's files are read here to find it."""
    try:
        return cls.from_pretrained(source, subfolder=subfolder, **kwargs)
    except Exception as err:
        root = folder or snapshot_folder(source, kwargs.get("revision"))
        raise_if_damaged(root / subfolder if root is not None else None, err)
        if folder is not None and isinstance(err, OSError | ValueError):  # e.g. a weights file missing
            first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ModelNotAvailableError(
                f"Cannot load {folder / subfolder}: {first_line} Check that the folder holds a complete "
                f"diffusers-layout model; {how_to_replace(folder / subfolder)}"
            ) from err
        raise


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
    method here samples and inverts with DDIM. A damaged file of the model stops with
    `CorruptModelFileError` naming it. The parts carry the model's identity (name and content
    fingerprint, diffexpand.models.identity), which concept folders are checked against.
    """
    source = str(in_repo(pretrained) or pretrained)  # "assets/tiny-fashion-prior-v3" from any directory
    local = Path(source).expanduser()
    is_local = local.is_dir()
    if is_local:
        _check_local_folder(local)
        source = str(local)
    elif source.startswith((".", "/", "~")) or os.sep in source.strip("/").replace("/", "", 1):
        raise ModelNotAvailableError(f"Model folder '{pretrained}' does not exist.")
    kwargs = dict(revision=revision, local_files_only=_offline() or is_local)
    folder = local if is_local else None
    try:
        tokenizer = _load_part(CLIPTokenizer, source, folder, "tokenizer", kwargs)
        text_encoder = _load_part(CLIPTextModel, source, folder, "text_encoder", kwargs | {"dtype": dtype})
        weights = kwargs | {"dtype": dtype, "variant": variant}
        vae = _load_part(AutoencoderKL, source, folder, "vae", weights)
        unet = _load_part(UNet2DConditionModel, source, folder, "unet", weights)
        scheduler = _load_part(DDIMScheduler, source, folder, "scheduler", kwargs)
    except CorruptModelFileError:
        raise
    except (OSError, ValueError) as err:
        if is_local:
            raise
        raise _not_available(source, err) from err
    identity = model_identity(source, revision, variant)
    parts = SDComponents(tokenizer, text_encoder, vae, unet, scheduler, identity)
    if torch.device(device) != unet.device:
        parts.to(device=device)
    for module in parts.modules.values():
        module.eval()
    return parts
