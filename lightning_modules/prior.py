"""Pre-trains the tiny SD stack from scratch: first the VAE, then the UNet and CLIP text encoder.

One `fit` runs both stages (`vae_steps`, then `unet_steps`); at the end the EMA weights are written as
a diffusers-layout folder, which is the project's embedded default generator.

`init_from` starts a run from another run's checkpoint or exported prior folder (its weights only: a
fresh optimizer, learning-rate schedule and EMA) — a fine-tuning stage, the way Stable Diffusion 2's
v-prediction model was fine-tuned from its epsilon-prediction base: `vae_steps: 0` keeps the trained
VAE, `stack.prediction_type` may change. `init_parts` loads only some parts: a wider UNet can start
fresh beside a smaller prior's trained VAE and text encoder (the UNet's shapes may then differ). The
wall time carried over is the donor run's whole, as its training_info.json records it.
"""

from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path

import lightning as L
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from diffexpand.models import TinySDConfig, build_tiny_sd
from diffexpand.models.text import tokenize_prompts
from diffexpand.training.losses import noise_prediction_loss, psnr, vae_loss


def _warmup_cosine(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _ema(module: torch.nn.Module, decay: float) -> AveragedModel:
    ema = AveragedModel(module, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    return ema.requires_grad_(False)


class TinyPriorTrainer(L.LightningModule):
    def __init__(
        self,
        stack: TinySDConfig | None = None,
        vae_steps: int = 2000,
        unet_steps: int = 5000,
        vae_batch_size: int = 64,
        vae_lr: float = 1e-3,
        unet_lr: float = 1e-3,
        warmup_steps: int = 200,
        kl_weight: float = 1e-6,
        caption_dropout: float = 0.1,
        ema_decay: float = 0.999,
        output_dir: str = "outputs/tiny-fashion-prior",
        save_dtype: str = "float16",
        init_from: str | None = None,
        init_parts: list[str] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.parts = build_tiny_sd(stack or TinySDConfig())
        self.vae, self.unet, self.text_encoder = self.parts.vae, self.parts.unet, self.parts.text_encoder
        self.ema_unet = _ema(self.unet, ema_decay)
        self.ema_text_encoder = _ema(self.text_encoder, ema_decay)
        # 0 until the diffusion stage measures the latent std; checkpoints carry it.
        self.register_buffer("latent_scale", torch.zeros(()))
        self.register_buffer("alphas_cumprod", self.parts.scheduler.alphas_cumprod.clone().float())
        # Training wall time, summed over resumed runs (the model card reports it).
        self.register_buffer("train_seconds", torch.zeros((), dtype=torch.float64))
        self._batch_started = None
        self._init_parts = _check_init_parts(init_parts, init_from, vae_steps)
        if init_from:
            self._initialise_from(Path(init_from))

    def _initialise_from(self, path: Path) -> None:
        """Weights, latent scale and wall time of another prior run: its Lightning checkpoint, or an
        exported prior folder (diffusers layout; its weights are the EMA weights). The EMA restarts
        from these weights at the first step, so it never averages in an earlier objective's weights."""
        if path.is_dir():
            state = self._state_from_prior_folder(path)
        elif path.is_file():
            state = self._state_from_checkpoint(path)
        else:
            raise FileNotFoundError(
                f"init_from: {path} is neither a checkpoint of the prior trainer nor an exported prior folder"
            )
        own = self.state_dict()
        skipped = _prefixes_not_loaded(self._init_parts)
        state = {k: v for k, v in state.items() if not k.startswith(skipped)}
        wanted = [k for k in own if not k.startswith(skipped)]
        wrong = sorted(k for k in wanted if getattr(state.get(k), "shape", None) != own[k].shape)
        extra = sorted(k for k in state if k not in own)
        if wrong or extra:
            raise ValueError(
                f"init_from: {path} was trained with another stack: {len(wrong)} weight(s) missing or of "
                f"another shape (first: {wrong[:3]}), {len(extra)} unknown (first: {extra[:3]}); "
                f"give the same stack sizes as the run it comes from, {_OR_LOAD_SOME_PARTS}"
            )
        self.load_state_dict(own | {k: v.to(own[k].dtype) for k, v in state.items()})
        for ema in (self.ema_unet, self.ema_text_encoder):
            ema.n_averaged.zero_()  # AveragedModel copies the weights at its next update
        if self.hparams.vae_steps > 0:
            self.latent_scale.zero_()  # the VAE trains again: its latents' std is measured again

    @staticmethod
    def _state_from_checkpoint(path: Path) -> dict:
        from diffexpand.models.identity import read_checkpoint

        saved = read_checkpoint(path, "give init_from the last.ckpt of a prior run, or train that run again")
        state = saved.get("state_dict") if isinstance(saved, dict) else None
        if not isinstance(state, dict):
            raise ValueError(f"init_from: {path} holds no state_dict: not a checkpoint of the prior trainer")
        return state

    def _state_from_prior_folder(self, path: Path) -> dict:
        """The trainer's state built from an exported prior: its VAE, UNet and text encoder (loaded and
        checked part by part), its latent scaling factor and, from training_info.json, its wall time.
        Entries the export does not hold (the noise schedule, the EMA copies) stay this run's own; a
        weight of this run's parts that the folder lacks is reported as missing by the caller."""
        from diffexpand.models import load_sd_components

        if not (path / "model_index.json").is_file():
            raise FileNotFoundError(
                f"init_from: {path} holds no model_index.json: not an exported prior folder"
            )
        parts = load_sd_components(path)
        _check_same_architecture(path, self.parts, parts, self._init_parts)
        own_parts = tuple(f"{name}." for name in PRIOR_PARTS)
        state = {k: v for k, v in self.state_dict().items() if not k.startswith(own_parts)}
        for name in self._init_parts:
            for key, value in getattr(parts, name).state_dict().items():
                state[f"{name}.{key}"] = value
        info = _training_info(path)
        scale = parts.vae.config.scaling_factor
        if not isinstance(scale, int | float) or isinstance(scale, bool) or not 0 < scale < float("inf"):
            from diffexpand.models.identity import corrupt_file_error

            raise corrupt_file_error(
                path / "vae/config.json", f"scaling_factor is {scale!r}, not a number > 0"
            )
        if info.get("latent_scaling_factor") == 0:
            scale = 0.0  # exported before the UNet stage: the 1.0 in the VAE config is a placeholder
        state["latent_scale"] = torch.tensor(float(scale))
        state["train_seconds"] = torch.tensor(
            _seconds(path, info.get("train_seconds", 0.0)), dtype=torch.float64
        )
        return state

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Checkpoints from before wall-time recording: start the clock at zero rather than refuse them.
        checkpoint["state_dict"].setdefault("train_seconds", torch.zeros((), dtype=torch.float64))

    def on_train_batch_start(self, batch, batch_idx) -> None:
        self._batch_started = time.perf_counter()

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self._batch_started is not None:
            self.train_seconds += time.perf_counter() - self._batch_started

    # ---- optimisation -------------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        vae_opt = torch.optim.AdamW(self.vae.parameters(), lr=hp.vae_lr, weight_decay=0.0)
        diff_params = [*self.unet.parameters(), *self.text_encoder.parameters()]
        diff_opt = torch.optim.AdamW(diff_params, lr=hp.unet_lr, weight_decay=0.01)
        vae_sched = torch.optim.lr_scheduler.LambdaLR(vae_opt, _warmup_cosine(hp.warmup_steps, hp.vae_steps))
        diff_sched = torch.optim.lr_scheduler.LambdaLR(
            diff_opt, _warmup_cosine(hp.warmup_steps, hp.unet_steps)
        )
        return [vae_opt, diff_opt], [vae_sched, diff_sched]

    @property
    def in_vae_stage(self) -> bool:
        return self.global_step < self.hparams.vae_steps

    def _encode_captions(self, captions: list[str]) -> torch.Tensor:
        """Text hidden states with gradient, running CLIP once per distinct caption of the batch."""
        unique = list(dict.fromkeys(captions))
        ids = tokenize_prompts(self.parts.tokenizer, unique).to(self.device)
        hidden = self.text_encoder(ids)[0]
        return hidden[torch.tensor([unique.index(c) for c in captions], device=self.device)]

    @torch.no_grad()
    def _latents(self, images: torch.Tensor) -> torch.Tensor:
        mean = self.vae.encode(images).latent_dist.mean
        if self.latent_scale == 0:  # first diffusion step: unit-variance latents, as SD's 0.18215
            self.latent_scale.fill_(1.0 / mean.std().item())
        return mean * self.latent_scale

    def training_step(self, batch, batch_idx):
        vae_opt, diff_opt = self.optimizers()
        vae_sched, diff_sched = self.lr_schedulers()
        images = batch["pixel_values"]
        if self.in_vae_stage:
            # A smaller batch than the UNet stage's: the VAE costs more than the UNet per image on a CPU
            # (docs/measurements/2026-11-22.md), and needs fewer images to converge.
            losses = vae_loss(self.vae, images[: self.hparams.vae_batch_size], self.hparams.kl_weight)
            vae_opt.zero_grad()
            self.manual_backward(losses["loss"])
            vae_opt.step()
            vae_sched.step()
            self.log_dict({f"vae/{k}": v for k, v in losses.items()}, prog_bar=True)
            return
        self.vae.eval()
        latents = self._latents(images)
        drop = torch.rand(len(images)) < self.hparams.caption_dropout
        captions = ["" if d else c for c, d in zip(batch["caption"], drop.tolist(), strict=True)]
        loss = noise_prediction_loss(
            self.unet,
            latents,
            self._encode_captions(captions),
            self.alphas_cumprod,
            self.parts.scheduler.config.prediction_type,
        )
        diff_opt.zero_grad()
        self.manual_backward(loss)
        torch.nn.utils.clip_grad_norm_([*self.unet.parameters(), *self.text_encoder.parameters()], 1.0)
        diff_opt.step()
        diff_sched.step()
        self.ema_unet.update_parameters(self.unet)
        self.ema_text_encoder.update_parameters(self.text_encoder)
        self.log_dict({"diffusion/loss": loss, "latent_scale": self.latent_scale}, prog_bar=True)

    def validation_step(self, batch, batch_idx):
        images = batch["pixel_values"]
        recon = self.vae.decode(self.vae.encode(images).latent_dist.mean).sample
        self.log("val/vae_psnr", psnr(recon, images).mean(), prog_bar=True)

    # ---- export -------------------------------------------------------------------------------
    def export_components(self):
        """The trained stack with EMA weights and the measured latent scaling factor."""
        parts = self.parts
        parts.unet.load_state_dict(self.ema_unet.module.state_dict())
        parts.text_encoder.load_state_dict(self.ema_text_encoder.module.state_dict())
        scale = float(self.latent_scale) if self.latent_scale > 0 else 1.0
        parts.vae.register_to_config(scaling_factor=scale)
        return parts

    def on_train_end(self) -> None:
        if not self.trainer.is_global_zero or not self.hparams.output_dir:
            return
        self.saved_to = self.export(  # train.py names it with the run's other outputs
            Path(self.hparams.output_dir),
            global_step=self.global_step,
            batch_size=self.trainer.train_dataloader.batch_size,
            captioner=getattr(self.trainer.datamodule, "captioner", None),
        )

    def export(self, out: Path, *, global_step: int, batch_size: int | None, captioner=None) -> Path:
        """The EMA weights as a diffusers folder, with training_info.json and, for attribute captions,
        the captioner's thresholds (tools/export_prior.py calls it on a checkpoint of a running run).
        The EMA weights are copied into this module's UNet and text encoder: call it when training
        is over."""
        self.export_components().save_pretrained(out, dtype=getattr(torch, self.hparams.save_dtype))
        info = {
            "vae_steps": self.hparams.vae_steps,
            "unet_steps_scheduled": self.hparams.unet_steps,
            "unet_steps_trained": max(0, global_step - self.hparams.vae_steps),
            "batch_size": batch_size,
            "vae_batch_size": self.hparams.vae_batch_size,
            "train_seconds": round(float(self.train_seconds), 1),
            "hardware": describe_hardware(),
            "latent_scaling_factor": float(self.latent_scale),
            "prediction_type": self.parts.scheduler.config.prediction_type,
            "initialised_from": self.hparams.init_from,
            "initialised_parts": list(self._init_parts) if self.hparams.init_from else None,
        }
        (out / "training_info.json").write_text(json.dumps(info, indent=2) + "\n")
        # The attribute thresholds its captions were built with: "dark" means darker than most of the
        # metaclass, and evaluating the prior's attribute words needs the same thirds.
        if captioner is not None:
            captioner.save(out)
        else:
            from diffexpand.data.attributes import CAPTIONER_FILE

            (out / CAPTIONER_FILE).unlink(missing_ok=True)  # a previous export's, into the same folder
        return out


def _training_info(folder: Path) -> dict:
    """An exported prior's training_info.json ({} when it has none, as a prior from elsewhere)."""
    info_file = folder / "training_info.json"
    if not info_file.is_file():
        return {}
    try:
        info = json.loads(info_file.read_text())
        if not isinstance(info, dict):
            raise ValueError(f"a JSON {type(info).__name__}, not an object")
    except (ValueError, UnicodeDecodeError) as err:
        from diffexpand.models.identity import corrupt_file_error

        raise corrupt_file_error(info_file, f"not a JSON object ({err})") from err
    return info


def _seconds(folder: Path, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
        from diffexpand.models.identity import corrupt_file_error

        raise corrupt_file_error(
            folder / "training_info.json", f"train_seconds is {value!r}, not a number of seconds"
        )
    return float(value)


# The parts of a prior `init_from` can load (`init_parts`), in the order they train.
PRIOR_PARTS = ("vae", "unet", "text_encoder")
_OR_LOAD_SOME_PARTS = f"or load only the parts that match (init_parts, of {list(PRIOR_PARTS)})"


def _check_init_parts(init_parts, init_from, vae_steps: int) -> tuple[str, ...]:
    """`init_parts` as a tuple (None: every part); refused when it names an unknown part, repeats one,
    names none, comes without init_from, or leaves a VAE that no stage trains."""
    if init_parts is None:
        return PRIOR_PARTS
    if not init_from:
        raise ValueError("init_parts says which parts init_from loads: give init_from too")
    parts = tuple(init_parts)
    unknown = [p for p in parts if p not in PRIOR_PARTS]
    if unknown or not parts or len(set(parts)) != len(parts):
        raise ValueError(f"init_parts must name each of {list(PRIOR_PARTS)} at most once, got {list(parts)}")
    if "vae" not in parts and vae_steps == 0:
        raise ValueError(
            "init_parts leaves the VAE untrained: load it (add 'vae') or train it (vae_steps > 0)"
        )
    return parts


def _prefixes_not_loaded(parts: tuple[str, ...]) -> tuple[str, ...]:
    """State-dict key prefixes of the parts (and their EMA copies, where they have one) that init_from
    leaves as built."""
    return tuple(f"{ema}{p}." for p in PRIOR_PARTS if p not in parts for ema in ("", "ema_"))


# The settings that change what a part computes without changing its weights' shapes.
_SAME_CONFIG = {
    "unet": ("attention_head_dim", "num_attention_heads", "block_out_channels", "layers_per_block",
             "down_block_types", "up_block_types", "cross_attention_dim"),
    "text_encoder": ("num_attention_heads", "num_hidden_layers", "hidden_act", "hidden_size"),
    "vae": ("block_out_channels", "layers_per_block", "latent_channels"),
}  # fmt: skip


def _check_same_architecture(path: Path, own, other, names: tuple[str, ...]) -> None:
    """Refuse a folder whose parts among `names` compute differently from this run's."""

    def config_of(part):
        config = part.config if isinstance(part.config, dict) else part.config.to_dict()
        return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}  # JSON has lists

    differ = []
    for name, keys in _SAME_CONFIG.items():
        if name not in names:  # a part init_from does not load may differ
            continue
        theirs, ours = config_of(getattr(other, name)), config_of(getattr(own, name))
        differ += [
            f"{name}.{k}: {theirs.get(k)!r} there, {ours.get(k)!r} here"
            for k in keys
            if theirs.get(k) != ours.get(k)
        ]
    if differ:
        raise ValueError(
            f"init_from: {path} was trained with another stack ({'; '.join(differ)}); "
            f"give the same stack settings as the run it comes from, {_OR_LOAD_SOME_PARTS}"
        )


def describe_hardware() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA)"
    return f"CPU: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
