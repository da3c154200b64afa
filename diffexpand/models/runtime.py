"""The diffusion model as generation runs it: loaded once (with a concept folder's tokens and LoRA),
placed on a device with the speed settings, and fingerprinted for caches and resume checks.

Speed settings (each a config value; the defaults are right on CPU and on a CUDA GPU):
  dtype          weights of text encoder and UNet: float32 (default), bfloat16 or float16; the VAE
                 stays float32 (SD's VAE overflows float16; bf16 VAE output depends on batch size)
  autocast       auto (bf16 on a CUDA GPU that has it and on a CPU with bf16 instructions, avx512_bf16
                 or AMX; off elsewhere), bf16, fp16 or none. The VAE always runs outside autocast, in
                 its own dtype: its output is the image, and bf16 VAE kernels round differently at
                 different batch sizes (the UNet's do not, so images stay within one level)
  channels_last  None = on CUDA only (faster convolutions with tensor cores), True, False
  compile        torch.compile the UNet's forward (minutes of compilation; pays off on large sets)
  attention      sdpa (PyTorch scaled_dot_product_attention: flash / memory-efficient kernels),
                 eager (diffusers' reference attention), or auto: sdpa, except on a CPU under bf16
                 with small latents (<= 256 positions), where PyTorch's CPU flash kernel is slower
                 than eager (docs/measurements/2026-11-25.md)
  fuse_lora      merge the concept folder's LoRA into the UNet weights and drop the adapter layers
                 (the same function without the adapters' extra matmuls per call)

The fingerprint is computed from the resolved settings (every field of `SpeedSettings`, with "auto"
and None resolved for the device), so a new setting joins cache keys and resume checks by itself.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from diffexpand.cache import folder_fingerprint
from diffexpand.concepts import apply_concepts
from diffexpand.concepts.io import LORA_FILE

from .loading import load_sd_components

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
ATTENTION = ("auto", "sdpa", "eager")
DTYPES = ("float32", "bfloat16", "float16")
# Latents up to this many positions (16 x 16: 128 px through SD's VAE) count as small for attention="auto".
SMALL_LATENT_POSITIONS = 256
# How the VAE runs, part of every fingerprint: images made with the VAE under autocast (before it ran
# outside it in float32) are not resumed or cached alike.
VAE_ARITHMETIC = "float32, outside autocast"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (avx512_bf16 or AMX); elsewhere oneDNN emulates it,
    slower than float32. The checks are PyTorch's private helpers: absent ones count as no."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


@dataclass(frozen=True)
class SpeedSettings:
    dtype: str = "float32"
    autocast: str = "auto"
    channels_last: bool | None = None
    compile: bool = False
    attention: str = "auto"
    fuse_lora: bool = True

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"model.init_args.dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.autocast not in {"auto", "none", *AUTOCAST}:
            raise ValueError(
                f"model.init_args.autocast must be auto, bf16, fp16 or none, got {self.autocast!r}"
            )
        if self.attention not in ATTENTION:
            raise ValueError(f"model.init_args.attention must be one of {ATTENTION}, got {self.attention!r}")


class DiffusionRuntime:
    """`concepts`: a read concept folder (diffexpand.concepts.read_concepts) or None; `concept_lora`:
    load its LoRA too; `extra_modules`: other networks to place with the model (a method's feature
    extractor)."""

    def __init__(
        self,
        pretrained: str,
        speed: SpeedSettings,
        concepts=None,
        concept_lora: bool = True,
        extra_modules: dict[str, torch.nn.Module] | None = None,
    ):
        self.pretrained, self.speed = pretrained, speed
        self.concepts, self.concept_lora = concepts, concept_lora
        self.extra_modules = extra_modules or {}
        self.target = torch.device("cpu")  # where this process generates; the caller sets it
        self._parts = None
        self._optimised_for = None

    # ---- loading --------------------------------------------------------------------------------
    @property
    def parts(self):
        """The model's parts, loaded on first use."""
        if self._parts is None:
            parts = load_sd_components(self.pretrained, dtype=getattr(torch, self.speed.dtype))
            if parts.vae.dtype != torch.float32:  # see diffexpand.models.vae: images stay batch-invariant
                parts.vae.to(torch.float32)
            if self.concepts is not None:
                apply_concepts(parts, self.concepts.folder, self.concepts.class_names, lora=self.concept_lora)
                if self.lora_fused:
                    parts.unet.fuse_lora()
                    parts.unet.unload_lora()  # keeps the fused weights, removes the peft wrappers
            self._parts = parts
        return self._parts

    @property
    def lora_fused(self) -> bool:
        """Whether a concept LoRA is loaded and merged into the UNet (the folder may have none)."""
        if not (self.speed.fuse_lora and self.concepts is not None and self.concept_lora):
            return False
        return (self.concepts.folder / LORA_FILE).is_file()

    # ---- placement ------------------------------------------------------------------------------
    def target_device(self) -> torch.device:
        return self.target

    def device(self) -> torch.device:
        """Move the model (and the extra modules) to the target device, optimised for it."""
        for module in (*self.parts.modules.values(), *self.extra_modules.values()):
            module.to(self.target)
        self.optimise_for(self.target)
        return self.target

    def optimise_for(self, device: torch.device) -> None:
        """Attention kernels, memory format, TF32 and compilation, once per device."""
        if self._optimised_for == device:
            return
        from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

        speed, unet, vae = self.speed, self.parts.unet, self.parts.vae
        processor = AttnProcessor2_0 if self.attention_kind(device) == "sdpa" else AttnProcessor
        unet.set_attn_processor(processor())
        # the VAE runs in float32, where the flash kernel is the fastest (or the explicit choice)
        vae.set_attn_processor((AttnProcessor if speed.attention == "eager" else AttnProcessor2_0)())
        if self.uses_channels_last(device):
            unet.to(memory_format=torch.channels_last)
            vae.to(memory_format=torch.channels_last)
        if device.type == "cuda":  # TF32 for what stays float32 (VAE under fp16, guidance features)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if speed.compile and self._optimised_for is None:
            # the forward only: module hooks (timers, Lightning) stay outside the compiled graph
            unet.forward = torch.compile(unet.forward)
        self._optimised_for = device

    # ---- the settings resolved for a device -----------------------------------------------------
    def autocast_dtype(self, device: torch.device) -> torch.dtype | None:
        choice = self.speed.autocast
        if choice == "auto":
            if device.type == "cuda":
                return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
            return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else None
        return AUTOCAST.get(choice)

    def attention_kind(self, device: torch.device) -> str:
        """The attention the UNet uses on `device` (see `attention` in the module docstring)."""
        if self.speed.attention != "auto":
            return self.speed.attention
        positions = self.parts.unet.config.sample_size**2
        cpu_bf16 = device.type == "cpu" and self.autocast_dtype(device) == torch.bfloat16
        return "eager" if cpu_bf16 and positions <= SMALL_LATENT_POSITIONS else "sdpa"

    def uses_channels_last(self, device: torch.device) -> bool:
        choice = self.speed.channels_last
        return choice if choice is not None else device.type == "cuda"

    def precision(self, device: torch.device):
        """Autocast for generation and cache building (a no-op when autocast is off)."""
        dtype = self.autocast_dtype(device)
        return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    def resolved_speed(self, device: torch.device) -> dict:
        """Every speed setting as it acts on `device` ("auto" and None resolved)."""
        resolve = {
            "autocast": lambda: str(self.autocast_dtype(device)),
            "attention": lambda: self.attention_kind(device),
            "channels_last": lambda: self.uses_channels_last(device),
        }
        settings = asdict(self.speed)
        return {
            f.name: resolve[f.name]() if f.name in resolve else settings[f.name] for f in fields(self.speed)
        }

    @functools.cached_property
    def _folders_fingerprint(self) -> dict:
        """Content hashes of the model and concept folders, read once per run (every cache key and the
        settings check ask for the fingerprint; the folders do not change while the model is loaded)."""
        source = Path(self.pretrained)
        return {
            "model": folder_fingerprint(source) if source.is_dir() else self.pretrained,
            "concepts": folder_fingerprint(self.concepts.folder) if self.concepts else None,
        }

    def fingerprint(self) -> dict:
        """What generated images depend on besides the method: the weights, the concept folder, the
        LoRA and the arithmetic (a bf16 set is not resumed in float32, nor cached alike; under bf16
        the attention kernel and the memory layout move images by many levels too)."""
        return {
            **self._folders_fingerprint,
            "lora": "fused" if self.lora_fused else self.concept_lora,
            "vae": VAE_ARITHMETIC,
            **self.resolved_speed(self.target),
        }
