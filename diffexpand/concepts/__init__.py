from .io import (
    ConceptMismatchError,
    ConceptSet,
    apply_concepts,
    read_concepts,
    rewrite_concepts_json,
    save_concepts,
)
from .lora import add_shared_lora, lora_layers_for_saving
from .metadata import ConceptFolderError, PriorMismatchError, check_template
from .tokens import (
    ConceptEmbeddings,
    add_placeholder_tokens,
    class_token,
    concept_phrase,
    initial_rows,
    placeholder_tokens,
)

__all__ = [
    "ConceptEmbeddings",
    "ConceptFolderError",
    "ConceptMismatchError",
    "ConceptSet",
    "PriorMismatchError",
    "add_placeholder_tokens",
    "add_shared_lora",
    "apply_concepts",
    "check_template",
    "class_token",
    "concept_phrase",
    "initial_rows",
    "lora_layers_for_saving",
    "placeholder_tokens",
    "read_concepts",
    "rewrite_concepts_json",
    "save_concepts",
]
