"""A tiny CLIP for the tiny Fashion-MNIST world: build, train-loss, save, zero-shot.

The CLIP score of the papers needs a CLIP that knows the *fine* class names. No pretrained CLIP can be
downloaded here, so the project trains one on Fashion-MNIST captions with the fine names ("a photo of a
Sneaker"), as real CLIP knows class names; the tiny prior only knows metaclass words. The model is a
stock transformers `CLIPModel` with a stock `CLIPProcessor` (CLIPImageProcessor at 32 px with CLIP's
mean/std + the project's real CLIP tokenizer), so anything that loads a CLIP folder loads it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

from diffexpand.models.tokenizer import CLIP_VOCAB_SIZE, build_clip_tokenizer

# Training captions: a few phrasings so the text side learns the class word, not one sentence.
TEMPLATES = (
    "a photo of a {}",
    "a {}",
    "a picture of a {}",
    "a photo of the {}",
    "a grey photo of a {}",
    "a low resolution photo of a {}",
    "an image of a {}",
)
EVAL_TEMPLATE = "a photo of a {}"
BOS, EOS = 49406, 49407  # <|startoftext|>, <|endoftext|> (also the padding token) of CLIP's vocabulary


@dataclass
class TinyClipSize:
    """Sizes of the tiny CLIP. Most of the text side is CLIP's 49,408-row token table, so its width
    sets the file size (32 wide: 1.6 M parameters); the vision side (a ViT on 4x4 patches of a
    32 px image: 64 tokens + class token) is where the accuracy comes from."""

    image_size: int = 32
    patch_size: int = 4
    vision_hidden: int = 128
    vision_layers: int = 4
    vision_heads: int = 4
    text_hidden: int = 32
    text_layers: int = 2
    text_heads: int = 2
    projection_dim: int = 64
    max_length: int = 32  # text positions; the tokenizer's model_max_length matches it


def build_tiny_clip(size: TinyClipSize | None = None) -> CLIPModel:
    """A randomly initialised `CLIPModel` of the given size."""
    s = size or TinyClipSize()
    text = dict(
        vocab_size=CLIP_VOCAB_SIZE,
        hidden_size=s.text_hidden,
        intermediate_size=4 * s.text_hidden,
        num_hidden_layers=s.text_layers,
        num_attention_heads=s.text_heads,
        max_position_embeddings=s.max_length,
        # pooled output = the first <|endoftext|>; the padding is <|endoftext|> too, after it
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=EOS,
        projection_dim=s.projection_dim,  # unused by CLIPModel (it reads the top level); kept equal
    )
    vision = dict(
        hidden_size=s.vision_hidden,
        intermediate_size=4 * s.vision_hidden,
        num_hidden_layers=s.vision_layers,
        num_attention_heads=s.vision_heads,
        image_size=s.image_size,
        patch_size=s.patch_size,
        projection_dim=s.projection_dim,
    )
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=s.projection_dim))


def build_processor(size: TinyClipSize | None = None) -> CLIPProcessor:
    """Stock `CLIPProcessor`: resize / centre-crop to the model's size, CLIP's own mean and std (an
    identity resize for the project's 32 px images), and the real CLIP tokenizer cut to the model's
    text positions (torchmetrics slices longer captions to `max_position_embeddings` itself)."""
    s = size or TinyClipSize()
    images = CLIPImageProcessor(
        size={"shortest_edge": s.image_size}, crop_size={"height": s.image_size, "width": s.image_size}
    )
    tokenizer = build_clip_tokenizer()
    tokenizer.model_max_length = s.max_length
    return CLIPProcessor(image_processor=images, tokenizer=tokenizer)


def pixel_values(images: torch.Tensor, processor: CLIPProcessor) -> torch.Tensor:
    """Images in [-1, 1] (B, 3, S, S) at the model's size -> normalised model input, the same as the
    processor makes of their uint8 form (batched, no PIL round trip: what training uses)."""
    ip = processor.image_processor
    mean = torch.tensor(ip.image_mean, device=images.device)[:, None, None]
    std = torch.tensor(ip.image_std, device=images.device)[:, None, None]
    return ((images + 1) / 2 - mean) / std


def tokenize(processor: CLIPProcessor, prompts: list[str], device=None) -> dict[str, torch.Tensor]:
    enc = processor.tokenizer(prompts, padding=True, truncation=True, return_tensors="pt")
    return {k: v.to(device) for k, v in enc.items()}


def image_embeddings(model: CLIPModel, pixels: torch.Tensor) -> torch.Tensor:
    """Unit-norm projected image embeddings (transformers 5 returns them as `pooler_output`)."""
    return F.normalize(model.get_image_features(pixel_values=pixels).pooler_output.float(), dim=-1)


def text_embeddings(model: CLIPModel, processor: CLIPProcessor, prompts: list[str]) -> torch.Tensor:
    enc = tokenize(processor, prompts, model.device)
    return F.normalize(model.get_text_features(**enc).pooler_output.float(), dim=-1)


def multi_positive_clip_loss(
    image_emb: torch.Tensor, text_emb: torch.Tensor, labels: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of (image, caption) pairs in which every caption of the same class
    is a positive. With ten classes a batch of 256 holds ~25 pairs per class; plain CLIP loss would
    push those same-class captions apart as negatives."""
    logits = logit_scale * image_emb @ text_emb.T
    positive = (labels[:, None] == labels[None, :]).float()
    targets = positive / positive.sum(1, keepdim=True)  # symmetric mask: same row/column sums
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def random_translate(images: torch.Tensor, pixels: int = 2, fill: float = -1.0) -> torch.Tensor:
    """Shift each image by its own random offset of up to `pixels` (pad with background, crop back)."""
    b, _, h, w = images.shape
    padded = F.pad(images, (pixels,) * 4, value=fill)
    dy, dx = torch.randint(0, 2 * pixels + 1, (2, b, 1, 1), device=images.device)
    rows = (dy + torch.arange(h, device=images.device)[None, :, None]).expand(b, h, w)
    cols = (dx + torch.arange(w, device=images.device)[None, None, :]).expand(b, h, w)
    batch = torch.arange(b, device=images.device)[:, None, None].expand(b, h, w)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


@torch.no_grad()
def zero_shot(
    model: CLIPModel,
    processor: CLIPProcessor,
    images: torch.Tensor,
    labels: torch.Tensor,
    class_names: list[str],
    template: str = EVAL_TEMPLATE,
    batch_size: int = 500,
) -> dict:
    """Zero-shot classification of images in [-1, 1] by their nearest class prompt: accuracy, per-class
    accuracy and the predictions."""
    text = text_embeddings(model, processor, [template.format(n) for n in class_names])
    preds = torch.cat(
        [
            (image_embeddings(model, pixel_values(chunk.to(model.device), processor)) @ text.T).argmax(1)
            for chunk in images.split(batch_size)
        ]
    ).cpu()
    correct = preds == labels
    per_class = {name: float(correct[labels == c].float().mean()) for c, name in enumerate(class_names)}
    return {"accuracy": float(correct.float().mean()), "per_class": per_class, "predictions": preds}


@torch.no_grad()
def clip_score_matrix(
    model: CLIPModel, processor: CLIPProcessor, images: torch.Tensor, labels: torch.Tensor, prompts: list[str]
) -> torch.Tensor:
    """(C, C) mean CLIP score (100 * max(cos, 0), torchmetrics' definition) of the images of class i
    against prompt j: the diagonal is the right prompt, the rest wrong ones."""
    text = text_embeddings(model, processor, prompts)
    scores = torch.cat(
        [
            (100 * image_embeddings(model, pixel_values(chunk.to(model.device), processor)) @ text.T)
            .clamp_min(0)
            .cpu()
            for chunk in images.split(500)
        ]
    )
    return torch.stack([scores[labels == c].mean(0) for c in range(len(prompts))])


def save_tiny_clip(
    model: CLIPModel,
    processor: CLIPProcessor,
    folder: str | Path,
    dtype: torch.dtype = torch.float32,
    info: dict | None = None,
) -> Path:
    """Write a folder that `CLIPModel.from_pretrained(folder)` / `CLIPProcessor.from_pretrained(folder)`
    load with no extra argument. With `dtype` (e.g. float16, half the file) the weights are stored in
    it but the config says float32: transformers 5 loads in the config's dtype, so the loaded model is
    float32 either way."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    original = next(model.parameters()).dtype
    model.to(dtype).save_pretrained(folder, safe_serialization=True)
    model.to(original)
    processor.save_pretrained(folder)
    config_file = folder / "config.json"
    config_file.write_text(json.dumps(_float32_config(json.loads(config_file.read_text())), indent=2) + "\n")
    if info is not None:
        (folder / "training_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return folder


def _float32_config(values):
    """The config with every dtype it names (top level and the text / vision sub-configs) as float32."""
    if isinstance(values, dict):
        return {
            k: "float32" if k in ("dtype", "torch_dtype") and v is not None else _float32_config(v)
            for k, v in values.items()
        }
    return values
