"""A concept folder: what the concept learner produces and every later stage reads.

concepts.json                      class index -> name -> tokens -> metaclass -> prompts (see metadata.py)
embeddings/<class_i>.safetensors   {"<class_i>": (n, D)}: `pipe.load_textual_inversion(file)`
pytorch_lora_weights.safetensors   the shared UNet LoRA: `pipe.load_lora_weights(folder)`
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from diffexpand.manifest import atomic_write_bytes
from diffexpand.paths import portable

from .metadata import (
    CONCEPTS_JSON,
    ConceptFolderError,
    class_prompt,
    concepts_metadata,
    embedding_file,
    parse_concepts_metadata,
    stock_prompt,
)
from .tokens import add_placeholder_tokens, class_token

LORA_FILE = "pytorch_lora_weights.safetensors"


class ConceptMismatchError(ValueError):
    """A concept folder was learned for other classes than the dataset at hand."""


@dataclass
class ConceptSet:
    folder: Path
    class_names: list[str]
    metaclasses: list[str]
    tokens_per_class: int
    prompt_template: str
    base_model: str

    def prompt(self, class_index: int, suffix: str = "") -> str:
        """This project's form: every token of the class written out."""
        return class_prompt(
            self.prompt_template, class_index, self.tokens_per_class, self.metaclasses[class_index], suffix
        )

    def stock_prompt(self, class_index: int, suffix: str = "") -> str:
        """The form for a stock diffusers pipeline that loaded the embeddings with
        `load_textual_inversion`: the first token only (the pipeline writes out the rest)."""
        return stock_prompt(self.prompt_template, class_index, self.metaclasses[class_index], suffix)

    def metadata(self) -> dict:
        """The content of concepts.json."""
        return concepts_metadata(
            self.class_names, self.metaclasses, self.tokens_per_class, self.prompt_template, self.base_model
        )

    def check_matches(self, class_names: list[str]) -> None:
        if list(class_names) != self.class_names:
            ours, theirs = set(self.class_names), set(class_names)
            detail = "same names in a different order"
            if ours != theirs:
                unknown, extra = sorted(theirs - ours)[:5], sorted(ours - theirs)[:5]
                detail = f"not learned: {unknown}; not in the dataset: {extra}"
            raise ConceptMismatchError(
                f"The concept folder {self.folder} was learned for {len(self.class_names)} classes that do "
                f"not match the dataset's {len(class_names)} ({detail}). Train concepts for this dataset "
                "(python train.py fit --config configs/concept.yaml …) or point model.init_args.concepts to "
                "the right folder."
            )


def write_concepts_json(concepts: ConceptSet) -> None:
    text = json.dumps(concepts.metadata(), indent=2, ensure_ascii=False) + "\n"
    atomic_write_bytes(concepts.folder / CONCEPTS_JSON, text.encode("utf-8"))


def save_concepts(
    folder,
    embeddings: torch.Tensor,
    class_names,
    metaclasses,
    prompt_template: str,
    base_model: str,
    lora_layers: dict | None,
) -> None:
    folder = Path(folder)
    (folder / "embeddings").mkdir(parents=True, exist_ok=True)
    n = embeddings.shape[1]
    for c in range(len(class_names)):
        rows = embeddings[c].detach().float().cpu().contiguous()
        save_file({class_token(c): rows}, folder / embedding_file(c))
    if lora_layers is not None:
        from diffusers import StableDiffusionPipeline

        StableDiffusionPipeline.save_lora_weights(
            folder, unet_lora_layers=lora_layers, safe_serialization=True
        )
    concepts = ConceptSet(
        folder, list(class_names), list(metaclasses), n, prompt_template, portable(base_model)
    )
    write_concepts_json(concepts)


def read_concepts(folder) -> ConceptSet:
    """The concept folder's classes and prompts, after checking every field of its concepts.json
    (ConceptFolderError names the first bad one). Folders written before the stock prompts were added
    read the same."""
    folder = Path(folder)
    path = folder / CONCEPTS_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a concept folder: {CONCEPTS_JSON} is missing")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConceptFolderError(f"{path} is not valid JSON: {err}") from None
    fields = parse_concepts_metadata(meta, str(path))
    return ConceptSet(folder, **fields)


def rewrite_concepts_json(folder) -> ConceptSet:
    """Rewrite a folder's concepts.json in the current format (adds the stock prompts to an older one);
    embeddings and LoRA are not touched."""
    concepts = read_concepts(folder)
    write_concepts_json(concepts)
    return concepts


def apply_concepts(parts, folder, class_names: list[str] | None = None, lora: bool = True) -> ConceptSet:
    """Load a concept folder into loaded SD parts (tokens, and the LoRA unless `lora=False`), after
    checking its classes."""
    concepts = read_concepts(folder)
    if class_names is not None:
        concepts.check_matches(class_names)
    width = parts.text_encoder.get_input_embeddings().weight.shape[1]
    rows = [_embedding_rows(concepts, c, width) for c in range(len(concepts.class_names))]  # checked first
    ids = add_placeholder_tokens(
        parts.tokenizer, parts.text_encoder, len(concepts.class_names), concepts.tokens_per_class
    )
    table = parts.text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        for c, class_rows in enumerate(rows):
            table[ids[c].to(table.device)] = class_rows.to(table.dtype).to(table.device)
    lora_file = concepts.folder / LORA_FILE
    if lora and lora_file.is_file():
        parts.unet.load_lora_adapter(str(lora_file), prefix="unet", adapter_name="concepts")
    return concepts


def _embedding_rows(concepts: ConceptSet, class_index: int, width: int) -> torch.Tensor:
    """Class `class_index`'s (n, D) rows, checked against concepts.json and the text encoder."""
    path = concepts.folder / embedding_file(class_index)
    if not path.is_file():
        raise ConceptFolderError(f"{path} is missing")
    tensors = load_file(path)
    token, shape = class_token(class_index), (concepts.tokens_per_class, width)
    rows = tensors.get(token)
    if rows is None or tuple(rows.shape) != shape or not rows.is_floating_point():
        found = {k: tuple(v.shape) for k, v in tensors.items()}
        raise ConceptFolderError(f"{path} must hold {token!r}: floating point, shape {shape}; found {found}")
    if not bool(rows.isfinite().all()):
        raise ConceptFolderError(f"{path} holds NaN or Inf")
    return rows
