"""Concept learner (the Diff-Mix recipe Diff-II uses): textual-inversion tokens per class plus one
LoRA shared by all classes, trained with the noise-prediction loss on "a photo of a <class_i> {metaclass}".
With `lora_rank: 0` it is plain textual inversion on a frozen UNet (DA-Fusion's own recipe), and the
folder it writes has no LoRA file.

Class names and metaclasses come from the datamodule at `setup`, so one config line picks the dataset.
At the end of fit the concept folder (diffusers formats + concepts.json) is written to `output_dir`:
the final weights, or, with `divergence_tolerance` set, the weights of the lowest smoothed training loss
when the loss ran away at the end of the run, with a warning that names both steps. Off by default: its
50-step average suits the tiny benchmark's batch of 16 (configs/concept.yaml turns it on); with SD's
batch of 2 the average is noisier and would need a longer window, not measured.
concepts.json records the prior's identity (name and content fingerprint), so the concepts are refused
on any other prior.

`prior_preservation_weight` > 0 adds DreamBooth's prior-preservation loss
(`diffexpand.concepts.prior_preservation`): at the first step, `class_samples_per_metaclass` latents per
metaclass are sampled from the frozen prior ("a photo of a shoe"), and each step adds, with that weight,
the denoising loss on one of them per instance, under the prompt without learned tokens. Off by default.
"""

from __future__ import annotations

import hashlib
import math
import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from tqdm import tqdm

from diffexpand.concepts import (
    ConceptEmbeddings,
    add_placeholder_tokens,
    add_shared_lora,
    check_template,
    initial_rows,
    lora_layers_for_saving,
    save_concepts,
)
from diffexpand.concepts.lora import DEFAULT_TARGETS
from diffexpand.concepts.metadata import MAX_TOKENS_PER_CLASS, class_prompt
from diffexpand.concepts.prior_preservation import draw_class_batch, metaclass_prompt, sample_class_latents
from diffexpand.models import load_sd_components
from diffexpand.models.text import tokenize_prompts
from diffexpand.models.vae import encode_images
from diffexpand.paths import DEFAULT_PRIOR
from diffexpand.progress import progress_wanted
from diffexpand.training.loss_watch import LossWatch
from diffexpand.training.losses import noise_prediction_loss


def _check_prior_preservation(weight, samples: int, steps: int, lora_rank: int) -> None:
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight < math.inf:
        raise ValueError(f"prior_preservation_weight must be a number >= 0 (0: off), got {weight!r}")
    if weight == 0:
        return
    if lora_rank == 0:
        raise ValueError(
            "prior_preservation_weight > 0 needs a LoRA (lora_rank > 0): it keeps the LoRA from changing "
            "what the prior draws for the metaclass prompt; with lora_rank 0 nothing that prompt uses trains"
        )
    for name, value in (("class_samples_per_metaclass", samples), ("class_sampling_steps", steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1 with prior preservation on, got {value!r}")


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """The seed of one training step on one rank. Each rank draws its own noise and timesteps (N GPUs
    see N timesteps per step); rank 0 keeps the single-device seed, so a one-device run is unchanged."""
    name = f"concept:{seed}:{step}" if rank == 0 else f"concept:{seed}:{step}:rank{rank}"
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") >> 1


class ConceptLearner(L.LightningModule):
    def __init__(
        self,
        pretrained: str = str(DEFAULT_PRIOR),
        tokens_per_class: int = 1,
        init_from: str = "metaclass",
        lora_rank: int = 10,
        lora_alpha: float | None = None,
        lora_targets: tuple[str, ...] = DEFAULT_TARGETS,
        embedding_lr: float = 5e-5,
        lora_lr: float = 5e-5,
        lora_weight_decay: float = 1e-2,
        prompt_template: str = "a photo of a {tokens} {metaclass}",
        output_dir: str = "outputs/concepts",
        seed: int = 0,
        dtype: str = "float32",
        gradient_checkpointing: bool = False,
        divergence_tolerance: float | None = None,
        prior_preservation_weight: float = 0.0,
        class_samples_per_metaclass: int = 100,
        class_sampling_steps: int = 25,
        class_guidance_scale: float = 7.5,
    ):
        super().__init__()
        if init_from not in {"metaclass", "class_name"}:
            raise ValueError(f"init_from must be 'metaclass' or 'class_name', got {init_from!r}")
        if lora_rank < 0:
            raise ValueError(f"lora_rank must be >= 0 (0: textual inversion only), got {lora_rank}")
        if not 1 <= tokens_per_class <= MAX_TOKENS_PER_CLASS:  # a prompt has 77 positions
            limit = MAX_TOKENS_PER_CLASS
            raise ValueError(f"tokens_per_class must be from 1 to {limit}, got {tokens_per_class}")
        check_template(prompt_template)  # before hours of training, not when concepts.json is read
        _check_prior_preservation(
            prior_preservation_weight, class_samples_per_metaclass, class_sampling_steps, lora_rank
        )
        self.save_hyperparameters()
        # Checkpoints hold only what trains (LoRA + new rows); the frozen base comes from `pretrained`.
        self.strict_loading = False
        self.parts = None
        self.loss_watch = LossWatch(tolerance=divergence_tolerance) if divergence_tolerance else None
        self.exported_step: int | None = None  # the optimizer step whose weights were exported
        self.class_latents: list[torch.Tensor] | None = None  # prior preservation's samples, per metaclass

    # ---- model construction (needs the dataset's classes) --------------------------------------
    def configure_model(self) -> None:
        if self.parts is not None:
            return
        hp = self.hparams
        dm = self.trainer.datamodule
        self.class_names, self.metaclasses = list(dm.class_names), list(dm.metaclasses)
        parts = load_sd_components(hp.pretrained, dtype=getattr(torch, hp.dtype))
        parts.requires_grad_(False)
        ids = add_placeholder_tokens(
            parts.tokenizer, parts.text_encoder, len(self.class_names), hp.tokens_per_class
        )
        words = self.metaclasses if hp.init_from == "metaclass" else self.class_names
        self.concepts = ConceptEmbeddings(
            ids, initial_rows(parts.tokenizer, parts.text_encoder, words, hp.tokens_per_class)
        )
        self.concepts.attach(parts.text_encoder)
        if hp.lora_rank > 0:
            add_shared_lora(parts.unet, hp.lora_rank, hp.lora_alpha, hp.lora_targets)
        for p in parts.unet.parameters():  # trainable LoRA weights stay fp32 under mixed precision
            if p.requires_grad:
                p.data = p.data.float()
        if hp.gradient_checkpointing:
            parts.unet.enable_gradient_checkpointing()
        self.parts = parts
        self.unet, self.vae, self.text_encoder = parts.unet, parts.vae, parts.text_encoder
        self.register_buffer(
            "alphas_cumprod", parts.scheduler.alphas_cumprod.float().clone(), persistent=False
        )
        n = hp.tokens_per_class
        self.prompts = [class_prompt(hp.prompt_template, c, n, m) for c, m in enumerate(self.metaclasses)]
        # prior preservation: one pool of class samples per distinct metaclass, and each class's pool
        pool_metaclasses = list(dict.fromkeys(self.metaclasses))
        self.pool_of_class = [pool_metaclasses.index(m) for m in self.metaclasses]
        self.pool_prompts = [metaclass_prompt(hp.prompt_template, m) for m in pool_metaclasses]

    def _sample_class_latents(self, shape: torch.Size) -> list[torch.Tensor]:
        """Prior preservation's class samples, of the training latents' `shape`: made at the first step
        of a run (a resumed one too, drawing the same), not stored in checkpoints."""
        hp = self.hparams
        prompts = self.pool_prompts
        total = len(prompts) * hp.class_samples_per_metaclass
        with tqdm(
            total=total, desc="prior preservation: sampling class latents", unit="latent",
            file=sys.stderr, leave=False, disable=not progress_wanted(),
        ) as bar:  # fmt: skip
            return sample_class_latents(
                self.parts,
                prompts,
                hp.class_samples_per_metaclass,
                tuple(shape),
                steps=hp.class_sampling_steps,
                guidance_scale=hp.class_guidance_scale,
                seed=hp.seed,
                progress=bar.update,
            )

    def lora_parameters(self) -> list[torch.nn.Parameter]:
        return [p for n, p in self.unet.named_parameters() if "lora_" in n]

    def configure_optimizers(self):
        hp = self.hparams
        groups = [{"params": [self.concepts.weight], "lr": hp.embedding_lr, "weight_decay": 0.0}]
        if hp.lora_rank > 0:
            lora = self.lora_parameters()
            groups.append({"params": lora, "lr": hp.lora_lr, "weight_decay": hp.lora_weight_decay})
        return torch.optim.AdamW(groups)

    # ---- training ---------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        # All randomness of a step comes from (seed, global_step, rank): resuming reproduces it exactly.
        seed = step_seed(self.hparams.seed, self.global_step, self.global_rank)
        g = torch.Generator(device=self.device).manual_seed(seed)
        self.vae.eval()
        with torch.no_grad():
            latents = encode_images(self.vae, batch["pixel_values"], sample=True, generator=g).float()
        ids = tokenize_prompts(self.parts.tokenizer, [self.prompts[int(c)] for c in batch["label"]]).to(
            self.device
        )
        loss = self._denoising_loss(latents, ids, g)
        if self.hparams.prior_preservation_weight > 0:
            if self.class_latents is None:
                self.class_latents = self._sample_class_latents(latents.shape[1:])
            loss = loss + self.hparams.prior_preservation_weight * self._prior_loss(batch["label"], g)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _denoising_loss(self, latents: torch.Tensor, ids: torch.Tensor, generator: torch.Generator):
        """The prior's training objective on `latents` under the prompts' token `ids`."""
        hidden = self.text_encoder(ids)[0]
        return noise_prediction_loss(
            self.unet,
            latents.to(self.unet.dtype),
            hidden.to(self.unet.dtype),
            self.alphas_cumprod,
            self.parts.scheduler.config.prediction_type,
            generator=generator,
        )

    def _prior_loss(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The denoising loss on one class sample per instance, of the instance's metaclass, under the
        prompt without learned tokens (drawn after the instance loss, so with the weight at 0 a step's
        draws are those of a run without prior preservation)."""
        latents = draw_class_batch(self.class_latents, self.pool_of_class, labels, generator)
        prompts = [self.pool_prompts[self.pool_of_class[int(c)]] for c in labels]
        ids = tokenize_prompts(self.parts.tokenizer, prompts).to(self.device)
        prior = self._denoising_loss(latents, ids, generator)
        self.log("train/prior_loss", prior)
        return prior

    def on_before_backward(self, loss: torch.Tensor) -> None:
        # Here, the loss and the weights it was computed with belong to the same step (`global_step`
        # updates applied so far), and the observation lands before the step's checkpoint is written.
        if self.loss_watch is None:
            return
        self.loss_watch.observe(self.global_step, float(loss.detach()), self._trainable_copy)
        if math.isfinite(self.loss_watch.smoothed):  # NaN until the first finite loss
            self.log("train/loss_smoothed", self.loss_watch.smoothed)

    def _trainable(self) -> dict[str, torch.nn.Parameter]:
        """What trains (the new token rows and the LoRA), by name: what checkpoints and the guard hold."""
        return {n: p for n, p in self.named_parameters() if p.requires_grad}

    def _trainable_copy(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().to("cpu", copy=True) for n, p in self._trainable().items()}

    def _fall_back_if_diverged(self) -> None:
        """Put back the weights of the lowest smoothed loss when the run ran away from it."""
        watch = self.loss_watch
        if watch is None or not watch.diverged:
            return
        params = self._trainable()
        with torch.no_grad():
            for name, value in watch.best_state.items():
                params[name].copy_(value.to(params[name].device, params[name].dtype))
        self.exported_step = watch.best_step
        rank_zero_warn(
            f"concept learning diverged: the smoothed training loss rose from {watch.best_loss:.4f} "
            f"(step {watch.best_step}) to {watch.smoothed:.4f} (step {self.global_step})"
            f"{' and a loss was not finite' if watch.saw_non_finite else ''}; exporting the weights of "
            f"step {watch.best_step}. A lower learning rate or fewer steps may avoid it."
        )

    # ---- checkpoints hold only what was trained ------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        trainable = self._trainable()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
        if self.loss_watch is not None:  # a resumed run still knows its lowest point
            checkpoint["loss_watch"] = self.loss_watch.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.loss_watch is None or "loss_watch" not in checkpoint:
            return
        state = checkpoint["loss_watch"]
        try:
            self.loss_watch.load_state_dict(state)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"the checkpoint's loss_watch entry is malformed ({err!r})") from err
        trainable = self._trainable()
        for name, value in (self.loss_watch.best_state or {}).items():
            if (
                name not in trainable
                or not isinstance(value, torch.Tensor)
                or value.shape != trainable[name].shape
            ):
                raise ValueError(f"the checkpoint's loss_watch copy of {name!r} does not fit this model")

    # ---- export ---------------------------------------------------------------------------------
    def export(self, folder) -> None:
        save_concepts(
            folder,
            self.concepts.weight,
            self.class_names,
            self.metaclasses,
            self.hparams.prompt_template,
            self.parts.identity or str(self.hparams.pretrained),  # name + fingerprint of what was loaded
            lora_layers_for_saving(self.unet) if self.hparams.lora_rank > 0 else None,
        )

    def on_train_end(self) -> None:
        if self.trainer.is_global_zero and self.hparams.output_dir:
            self.exported_step = self.global_step
            self._fall_back_if_diverged()
            self.export(Path(self.hparams.output_dir))
            self.saved_to = Path(self.hparams.output_dir)  # train.py names it with the run's other outputs
