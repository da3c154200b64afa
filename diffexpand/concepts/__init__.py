from .io import ConceptMismatchError, ConceptSet, apply_concepts, read_concepts, save_concepts
from .lora import add_shared_lora, lora_layers_for_saving
from .tokens import (
    ConceptEmbeddings,
    add_placeholder_tokens,
    concept_phrase,
    initial_rows,
    placeholder_tokens,
)

__all__ = [
    "ConceptEmbeddings",
    "ConceptMismatchError",
    "ConceptSet",
    "add_placeholder_tokens",
    "add_shared_lora",
    "apply_concepts",
    "concept_phrase",
    "initial_rows",
    "lora_layers_for_saving",
    "placeholder_tokens",
    "read_concepts",
    "save_concepts",
]
