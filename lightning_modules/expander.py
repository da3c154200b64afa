"""The expander: a predict-loop module that turns planned records into synthetic images."""

from __future__ import annotations

import contextlib
from pathlib import Path

import lightning as L
import torch

from diffexpand.cache import folder_fingerprint
from diffexpand.concepts import apply_concepts, read_concepts
from diffexpand.concepts.io import LORA_FILE
from diffexpand.methods import create_method
from diffexpand.models import load_sd_components
from diffexpand.models.vae import to_uint8
from diffexpand.paths import DEFAULT_PRIOR

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
ATTENTION = ("auto", "sdpa", "eager")
# Latents up to this many positions (16 x 16: 128 px through SD's VAE) count as small for attention="auto".
SMALL_LATENT_POSITIONS = 256
DTYPES = ("float32", "bfloat16", "float16")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (avx512_bf16 or AMX); elsewhere oneDNN emulates it,
    slower than float32. The checks are PyTorch's private helpers: absent ones count as no."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


class Expander(L.LightningModule):
    """Loads the diffusion model (hub id or local folder; default: the committed tiny prior), the
    concept folder when the method uses learned tokens, and delegates generation to the method.

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
                     than eager (tiny prior UNet at batch 64: 40% of its time in flash attention)
      fuse_lora      merge the concept folder's LoRA into the UNet weights and drop the adapter layers
                     (the same function; no extra matmuls per call: ~10% faster at batch 32 on CPU)
    """

    def __init__(
        self,
        pretrained: str = str(DEFAULT_PRIOR),
        method: str = "txt2img",
        method_args: dict | None = None,
        concepts: str | None = None,
        dtype: str = "float32",
        autocast: str = "auto",
        channels_last: bool | None = None,
        compile: bool = False,
        attention: str = "auto",
        fuse_lora: bool = True,
    ):
        super().__init__()
        if dtype not in DTYPES:
            raise ValueError(f"model.init_args.dtype must be one of {DTYPES}, got {dtype!r}")
        if autocast not in {"auto", "none", *AUTOCAST}:
            raise ValueError(f"model.init_args.autocast must be auto, bf16, fp16 or none, got {autocast!r}")
        if attention not in ATTENTION:
            raise ValueError(f"model.init_args.attention must be one of {ATTENTION}, got {attention!r}")
        self.save_hyperparameters()
        self._optimised_for = None
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
            if parts.vae.dtype != torch.float32:  # see diffexpand.models.vae: images stay batch-invariant
                parts.vae.to(torch.float32)
            if self.concepts is not None:
                apply_concepts(
                    parts, self.concepts.folder, self.concepts.class_names, lora=self.method.concept_lora
                )
                if self.lora_fused:
                    parts.unet.fuse_lora()
                    parts.unet.unload_lora()  # keeps the fused weights, removes the peft wrappers
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
        device = self.target_device()
        for module in self.parts.modules.values():
            module.to(device)
        if self.method.feature_extractor is not None:
            self.method.feature_extractor.to(device)
        self.optimise_for(device)
        return device

    def target_device(self) -> torch.device:
        return self.trainer.strategy.root_device if self._trainer is not None else self.device

    # ---- speed settings -------------------------------------------------------------------------
    def autocast_dtype(self, device: torch.device) -> torch.dtype | None:
        choice = self.hparams.autocast
        if choice == "auto":
            if device.type == "cuda":
                return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
            return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else None
        return AUTOCAST.get(choice)

    def attention_kind(self, device: torch.device) -> str:
        """The attention the UNet uses on `device` (see `attention` in the class docstring)."""
        if self.hparams.attention != "auto":
            return self.hparams.attention
        positions = self.load_parts().unet.config.sample_size ** 2
        cpu_bf16 = device.type == "cpu" and self.autocast_dtype(device) == torch.bfloat16
        return "eager" if cpu_bf16 and positions <= SMALL_LATENT_POSITIONS else "sdpa"

    def uses_channels_last(self, device: torch.device) -> bool:
        choice = self.hparams.channels_last
        return choice if choice is not None else device.type == "cuda"

    def precision_context(self, device: torch.device):
        """Autocast for generation and cache building (a no-op when autocast is off)."""
        dtype = self.autocast_dtype(device)
        return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    def optimise_for(self, device: torch.device) -> None:
        """Attention kernels, memory format, TF32 and compilation, once per device."""
        if self._optimised_for == device:
            return
        from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

        hp, unet, vae = self.hparams, self.parts.unet, self.parts.vae
        processor = AttnProcessor2_0 if self.attention_kind(device) == "sdpa" else AttnProcessor
        unet.set_attn_processor(processor())
        # the VAE runs in float32, where the flash kernel is the fastest (or the explicit choice)
        vae.set_attn_processor((AttnProcessor if hp.attention == "eager" else AttnProcessor2_0)())
        if self.uses_channels_last(device):
            unet.to(memory_format=torch.channels_last)
            vae.to(memory_format=torch.channels_last)
        if device.type == "cuda":  # TF32 for what stays float32 (VAE under fp16, guidance features)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if hp.compile and self._optimised_for is None:
            # the forward only: module hooks (timers, Lightning) stay outside the compiled graph
            unet.forward = torch.compile(unet.forward)
        self._optimised_for = device

    def on_predict_start(self) -> None:
        self.optimise_for(self.device)

    def model_fingerprint(self) -> dict:
        source = Path(self.hparams.pretrained)
        model = folder_fingerprint(source) if source.is_dir() else self.hparams.pretrained
        concepts = folder_fingerprint(self.concepts.folder) if self.concepts else None
        device = self.target_device()
        return {
            "model": model,
            "dtype": self.hparams.dtype,
            # images depend on the arithmetic: a bf16 set is not resumed in float32, nor cached alike;
            # under bf16 the attention kernel and the memory layout move images by many levels too
            "autocast": str(self.autocast_dtype(device)),
            "attention": self.attention_kind(device),
            "channels_last": self.uses_channels_last(device),
            "compile": self.hparams.compile,  # inductor's fused kernels round differently
            "vae": "float32, outside autocast",  # since 2026-11-25 (before: under autocast, bf16)
            "concepts": concepts,
            "lora": "fused" if self.lora_fused else self.method.concept_lora,
        }

    @property
    def lora_fused(self) -> bool:
        """Whether a concept LoRA is loaded and merged into the UNet (the folder may have none)."""
        if not (self.hparams.fuse_lora and self.concepts is not None and self.method.concept_lora):
            return False
        return (self.concepts.folder / LORA_FILE).is_file()

    def predict_step(self, batch: list[dict], batch_idx: int) -> dict:
        with self.precision_context(self.device):
            images = self.method.generate(self.parts, batch)
        images = self._finite_or_regenerated(images, batch)
        public = [{k: v for k, v in r.items() if not isinstance(v, torch.Tensor)} for r in batch]
        return {"images": to_uint8(images), "records": public}

    def _finite_or_regenerated(self, images: torch.Tensor, batch: list[dict]) -> torch.Tensor:
        """Per sample: a NaN / Inf image is regenerated by the method's fallback in full precision and
        marked in its record; one that stays non-finite stops the run before anything is written."""
        bad = (~images.flatten(1).isfinite().all(1)).nonzero().flatten().tolist()  # one sync per batch
        if not bad:
            return images
        redo = [batch[i] for i in bad]
        with torch.autocast(self.device.type, enabled=False):
            again = self.method.generate_fallback(self.parts, redo).to(images.dtype)
        finite = again.flatten(1).isfinite().all(1).tolist()
        still = [r["sample_id"] for r, ok in zip(redo, finite, strict=True) if not ok]
        if still:
            raise FloatingPointError(
                f"samples {still} gave NaN/Inf images even after the fallback "
                f"({self.method.fallback_note}); nothing of this batch was written. Check the model "
                "weights and settings (guidance step size, dtype)."
            )
        images = images.clone()
        images[torch.tensor(bad, device=images.device)] = again
        for record in redo:
            record["numerical_fallback"] = self.method.fallback_note
        return images
