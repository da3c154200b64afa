"""Prompt -> CLIP hidden states, computed once per distinct prompt."""

from __future__ import annotations

import torch

from .tokenizer import clean_prompt


def tokenize_prompts(tokenizer, prompts: list[str]) -> torch.Tensor:
    """Token ids (B, 77), padded and truncated the way Stable Diffusion does it."""
    return tokenizer(
        [clean_prompt(p) for p in prompts],
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


@torch.no_grad()
def encode_prompts(tokenizer, text_encoder, prompts: list[str]) -> torch.Tensor:
    """Last hidden states (B, 77, D) for `prompts`; each distinct prompt runs through CLIP once."""
    unique = list(dict.fromkeys(prompts))
    device = next(text_encoder.parameters()).device
    ids = tokenize_prompts(tokenizer, unique).to(device)
    hidden = text_encoder(ids)[0]
    index = torch.tensor([unique.index(p) for p in prompts], device=device)
    return hidden[index]
