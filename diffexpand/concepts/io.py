"""A concept folder: what the concept learner produces and every later stage reads.

concepts.json                      class index -> name -> tokens -> metaclass (+ base model, template)
embeddings/<class_i>.safetensors   {"<class_i>": (n, D)}: `pipe.load_textual_inversion(file)`
pytorch_lora_weights.safetensors   the shared UNet LoRA: `pipe.load_lora_weights(folder)`
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from diffexpand.paths import portable

from .tokens import add_placeholder_tokens, concept_phrase, placeholder_tokens

CONCEPTS_JSON = "concepts.json"
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
        text = self.prompt_template.format(
            tokens=concept_phrase(class_index, self.tokens_per_class), metaclass=self.metaclasses[class_index]
        )
        return f"{text} {suffix}".strip() if suffix else text

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
    classes = []
    for c, name in enumerate(class_names):
        token = placeholder_tokens(c, 1)[0]
        file = f"embeddings/class_{c}.safetensors"
        save_file({token: embeddings[c].detach().float().cpu().contiguous()}, folder / file)
        classes.append(
            {
                "index": c,
                "name": name,
                "tokens": placeholder_tokens(c, n),
                "metaclass": metaclasses[c],
                "embedding_file": file,
            }
        )
    if lora_layers is not None:
        from diffusers import StableDiffusionPipeline

        StableDiffusionPipeline.save_lora_weights(
            folder, unet_lora_layers=lora_layers, safe_serialization=True
        )
    meta = {
        "base_model": portable(base_model),
        "tokens_per_class": n,
        "prompt_template": prompt_template,
        "classes": classes,
    }
    (folder / CONCEPTS_JSON).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")


def read_concepts(folder) -> ConceptSet:
    folder = Path(folder)
    path = folder / CONCEPTS_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a concept folder: {CONCEPTS_JSON} is missing")
    meta = json.loads(path.read_text())
    classes = sorted(meta["classes"], key=lambda c: c["index"])
    return ConceptSet(
        folder,
        [c["name"] for c in classes],
        [c["metaclass"] for c in classes],
        meta["tokens_per_class"],
        meta["prompt_template"],
        meta["base_model"],
    )


def apply_concepts(parts, folder, class_names: list[str] | None = None, lora: bool = True) -> ConceptSet:
    """Load a concept folder into loaded SD parts (tokens, and the LoRA unless `lora=False`), after
    checking its classes."""
    concepts = read_concepts(folder)
    if class_names is not None:
        concepts.check_matches(class_names)
    ids = add_placeholder_tokens(
        parts.tokenizer, parts.text_encoder, len(concepts.class_names), concepts.tokens_per_class
    )
    table = parts.text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        for c in range(len(concepts.class_names)):
            rows = load_file(concepts.folder / f"embeddings/class_{c}.safetensors")[
                placeholder_tokens(c, 1)[0]
            ]
            table[ids[c].to(table.device)] = rows.to(table.dtype).to(table.device)
    lora_file = concepts.folder / LORA_FILE
    if lora and lora_file.is_file():
        parts.unet.load_lora_adapter(str(lora_file), prefix="unet", adapter_name="concepts")
    return concepts
