"""Trains the tiny Fashion-MNIST CLIP (diffexpand/evaluation/tiny_clip.py) on fine-class captions.

Each image is paired with "a photo of a Sneaker"-style captions of its class, the phrasing drawn per
sample from a few templates; the loss is InfoNCE with every same-class caption as a positive. At the end
the model and its processor are written as a transformers CLIP folder (`output_dir`).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict

import lightning as L
import torch

from diffexpand.data.fashion_mnist import CLASS_NAMES
from diffexpand.evaluation.tiny_clip import (
    EVAL_TEMPLATE,
    TEMPLATES,
    TinyClipSize,
    build_processor,
    build_tiny_clip,
    image_embeddings,
    multi_positive_clip_loss,
    pixel_values,
    random_translate,
    save_tiny_clip,
    text_embeddings,
)
from diffexpand.models.runtime import cpu_has_native_bf16


class TinyClipTrainer(L.LightningModule):
    """Args:
    size: the model's sizes (TinyClipSize).
    templates: caption phrasings, "{}" standing for the fine class name.
    lr, weight_decay, warmup_fraction: AdamW with a one-cycle schedule (warm-up, then cosine).
    max_shift: random translation of up to this many pixels per image.
    autocast: auto (bf16 on a CUDA GPU that has it and on a CPU with bf16 instructions, off
        elsewhere), bf16 or none.
    output_dir: where the CLIP folder is written at the end of training ("" for nowhere).
    save_dtype: dtype of the stored weights (the config says float32 either way).
    """

    def __init__(
        self,
        size: TinyClipSize | None = None,
        templates: list[str] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_fraction: float = 0.1,
        max_shift: int = 2,
        autocast: str = "auto",
        output_dir: str = "outputs/tiny-fashion-clip",
        save_dtype: str = "float16",
    ):
        super().__init__()
        if autocast not in {"auto", "bf16", "none"}:
            raise ValueError(f"model.init_args.autocast must be auto, bf16 or none, got {autocast!r}")
        self.size = size or TinyClipSize()
        # The sizes go into the checkpoint as a plain dict: checkpoints load with weights_only=True,
        # which refuses to rebuild a dataclass.
        self.save_hyperparameters(ignore=["size"])
        self.hparams["size"] = asdict(self.size)
        self.templates = list(templates or TEMPLATES)
        self.model = build_tiny_clip(self.size)
        # The CPU's flash-attention backward is slower than plain matmuls for 65 tokens (measured:
        # 0.5 vs 0.8 s per batch of 256 under bf16); inference keeps transformers' default.
        self.model.set_attn_implementation("eager")
        self.processor = build_processor(self.size)
        # Every (class, template) caption, row = label * len(templates) + template index.
        self.captions = [t.format(name) for name in CLASS_NAMES for t in self.templates]
        self.register_buffer("train_seconds", torch.zeros((), dtype=torch.float64))
        self._batch_started = None

    def _autocast_dtype(self) -> torch.dtype | None:
        setting, device = self.hparams.autocast, self.device
        native = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_native_bf16()
        return torch.bfloat16 if setting == "bf16" or (setting == "auto" and native) else None

    def _autocast(self):
        dtype = self._autocast_dtype()
        return torch.autocast(self.device.type, dtype=dtype) if dtype else contextlib.nullcontext()

    def training_step(self, batch, batch_idx):
        images, labels = batch["pixel_values"], batch["label"]
        if self.hparams.max_shift:
            images = random_translate(images, self.hparams.max_shift)
        template = torch.randint(0, len(self.templates), labels.shape, device=labels.device)
        with self._autocast():
            image_emb = image_embeddings(self.model, pixel_values(images, self.processor))
            text_emb = text_embeddings(self.model, self.processor, self.captions)
        text_emb = text_emb[labels * len(self.templates) + template]
        scale = self.model.logit_scale.exp().clamp(max=100)  # CLIP's cap on the temperature
        loss = multi_positive_clip_loss(image_emb, text_emb, labels, scale)
        self.log_dict({"train/loss": loss, "train/logit_scale": scale}, prog_bar=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        prompts = [EVAL_TEMPLATE.format(name) for name in CLASS_NAMES]
        self._class_text = text_embeddings(self.model, self.processor, prompts)

    def validation_step(self, batch, batch_idx):
        """Zero-shot accuracy with "a photo of a {fine name}" (the datamodule's validation slice is part
        of the train split: a training-progress figure; tools/evaluate_clip.py measures the test split)."""
        emb = image_embeddings(self.model, pixel_values(batch["pixel_values"], self.processor))
        acc = ((emb @ self._class_text.T).argmax(1) == batch["label"]).float().mean()
        self.log("val/zero_shot_acc", acc, prog_bar=True, batch_size=len(emb))

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.AdamW(self.model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt,
            max_lr=hp.lr,
            total_steps=self.trainer.estimated_stepping_batches,
            pct_start=hp.warmup_fraction,
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_train_batch_start(self, batch, batch_idx) -> None:
        self._batch_started = time.perf_counter()

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self._batch_started is not None:
            self.train_seconds += time.perf_counter() - self._batch_started

    def on_train_end(self) -> None:
        if not self.trainer.is_global_zero or not self.hparams.output_dir:
            return
        from lightning_modules.prior import describe_hardware

        info = {
            "steps": self.global_step,
            "epochs": self.current_epoch,
            "batch_size": self.trainer.train_dataloader.batch_size,
            "train_seconds": round(float(self.train_seconds), 1),  # in training steps, over resumed runs
            "hardware": describe_hardware(),
            "autocast": str(self._autocast_dtype() or "none"),
            "templates": self.templates,
            "size": asdict(self.size),
        }
        self.model.set_attn_implementation("sdpa")
        folder = save_tiny_clip(
            self.model, self.processor, self.hparams.output_dir, getattr(torch, self.hparams.save_dtype), info
        )
        self.saved_to = folder  # train.py names it with the run's other outputs
