"""Per-class placeholder tokens for textual inversion (Gal et al. 2022).

Class i gets n tokens named like diffusers' multi-vector embeddings: "<class_i>", "<class_i>_1", …, so a
prompt written for our pipeline and one expanded by `pipe.load_textual_inversion` are the same tokens.
Our prompts write every token out ("<class_7> <class_7>_1 …"); a stock pipeline is given the first one
only ("<class_7>", `class_token`) and writes out the rest itself (`maybe_convert_prompt`).
The new rows live in their own small Parameter and are written over the embedding output by a forward
hook: the frozen embedding table itself never changes, so "only the new rows train" holds exactly.
"""

from __future__ import annotations

import torch
from torch import nn


def placeholder_tokens(class_index: int, tokens_per_class: int) -> list[str]:
    first = f"<class_{class_index}>"
    return [first] + [f"{first}_{k}" for k in range(1, tokens_per_class)]


def class_token(class_index: int) -> str:
    """The one token a stock diffusers prompt names a class by; the key of its embedding file."""
    return placeholder_tokens(class_index, 1)[0]


def concept_phrase(class_index: int, tokens_per_class: int) -> str:
    return " ".join(placeholder_tokens(class_index, tokens_per_class))


def word_embedding(tokenizer, text_encoder, word: str) -> torch.Tensor:
    """Mean input embedding of the tokens of `word` (class names can span several BPE tokens)."""
    ids = tokenizer(word, add_special_tokens=False).input_ids
    if not ids:
        raise ValueError(f"cannot initialise a token from the empty word {word!r}")
    table = text_encoder.get_input_embeddings().weight
    return table[torch.tensor(ids, device=table.device)].float().mean(0)


def check_tokens_are_new(tokenizer, num_classes: int, tokens_per_class: int) -> list[str]:
    """Every class's token names, after checking that none is in the vocabulary yet."""
    names = [t for c in range(num_classes) for t in placeholder_tokens(c, tokens_per_class)]
    clash = [t for t in names if t in tokenizer.get_vocab()]
    if clash:
        raise ValueError(f"placeholder tokens already in the vocabulary: {clash[:5]}")
    return names


def add_placeholder_tokens(tokenizer, text_encoder, num_classes: int, tokens_per_class: int) -> torch.Tensor:
    """Add every class's tokens to the tokenizer and the embedding table; returns their ids (C, n)."""
    names = check_tokens_are_new(tokenizer, num_classes, tokens_per_class)
    tokenizer.add_tokens(names)
    # mean_resizing off: these rows are never read (the concept rows are written over the embedding
    # output), so transformers' mean/covariance initialisation and its notice would be wasted
    text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    ids = tokenizer.convert_tokens_to_ids(names)
    return torch.tensor(ids).reshape(num_classes, tokens_per_class)


class ConceptEmbeddings(nn.Module):
    """The trainable rows of the placeholder tokens, injected into a frozen text encoder."""

    def __init__(self, token_ids: torch.Tensor, init: torch.Tensor):
        super().__init__()
        self.register_buffer("token_ids", token_ids.clone(), persistent=True)  # (C, n)
        self.weight = nn.Parameter(init.detach().float().clone())  # (C, n, D), fp32 under any precision
        self._handle = None

    @property
    def first_id(self) -> int:
        return int(self.token_ids.min())

    def attach(self, text_encoder) -> None:
        if self._handle is not None:
            self._handle.remove()
        self._handle = text_encoder.get_input_embeddings().register_forward_hook(self._inject)

    def _inject(self, module, inputs, output):
        ids = inputs[0]
        rows = ids - self.first_id
        is_new = (rows >= 0) & (rows < self.token_ids.numel())
        if not bool(is_new.any()):
            return output
        flat = self.weight.reshape(-1, self.weight.shape[-1]).to(output.dtype)
        new = flat[rows.clamp(0, flat.shape[0] - 1)]
        return torch.where(is_new.unsqueeze(-1), new, output)

    @torch.no_grad()
    def write_into(self, text_encoder) -> None:
        """Copy the learned rows into the embedding table (for inference without the hook)."""
        table = text_encoder.get_input_embeddings().weight
        table[self.token_ids.flatten().to(table.device)] = self.weight.reshape(-1, table.shape[1]).to(
            table.dtype
        )


def initial_rows(tokenizer, text_encoder, init_words: list[str], tokens_per_class: int) -> torch.Tensor:
    """(C, n, D): every token of class c starts at the embedding of init_words[c]."""
    rows = [word_embedding(tokenizer, text_encoder, w) for w in init_words]
    return torch.stack(rows)[:, None, :].expand(-1, tokens_per_class, -1).clone()
