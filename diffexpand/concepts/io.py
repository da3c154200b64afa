"""A concept folder: what the concept learner produces and every later stage reads.

concepts.json                      class index -> name -> tokens -> metaclass -> prompts, and the prior
                                   the concepts were learned on (name + fingerprint; see metadata.py)
embeddings/<class_i>.safetensors   {"<class_i>": (n, D)}: `pipe.load_textual_inversion(file)`
pytorch_lora_weights.safetensors   the shared UNet LoRA: `pipe.load_lora_weights(folder)`

`apply_concepts` checks a folder against the model it is applied to (the prior's fingerprint, then every
embedding file's tensor name and shape, then the LoRA file) before it changes the tokenizer or the UNet.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from diffexpand.manifest import atomic_write_bytes
from diffexpand.models.identity import (
    FINGERPRINT_SCHEME,
    ModelIdentity,
    how_to_replace,
    load_safetensors,
    short,
)
from diffexpand.paths import DEFAULT_PRIOR, REPO_ROOT, portable

from .metadata import (
    CONCEPTS_JSON,
    ConceptFolderError,
    PriorMismatchError,
    class_prompt,
    concepts_metadata,
    embedding_file,
    parse_concepts_metadata,
    stock_prompt,
)
from .tokens import add_placeholder_tokens, check_tokens_are_new, class_token, placeholder_tokens

LORA_FILE = "pytorch_lora_weights.safetensors"
LEARN = "python train.py fit --config configs/concept.yaml"


class ConceptMismatchError(ValueError):
    """A concept folder was learned for other classes than the dataset at hand."""


@dataclass
class ConceptSet:
    folder: Path
    class_names: list[str]
    metaclasses: list[str]
    tokens_per_class: int
    prompt_template: str
    base_model: str  # the name of the prior the concepts were learned on (hub id or folder)
    base_fingerprint: str | None = None  # its content fingerprint; None in folders written before it

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
            self.class_names,
            self.metaclasses,
            self.tokens_per_class,
            self.prompt_template,
            self.base_model,
            self.base_fingerprint,
        )

    @property
    def comparable_fingerprint(self) -> bool:
        """Whether a fingerprint is recorded, computed the way this version computes it."""
        return (self.base_fingerprint or "").rpartition(":")[0] == FINGERPRINT_SCHEME

    @property
    def learned_on(self) -> str:
        fingerprint = f" (fingerprint {short(self.base_fingerprint)})" if self.base_fingerprint else ""
        return f"'{self.base_model}'{fingerprint}"

    def check_learned_on(self, prior: ModelIdentity | None) -> None:
        """Refuse a prior other than the one the concepts were learned on (PriorMismatchError, naming
        both). Parts built in memory carry no identity (None): nothing to compare. A folder that records
        no fingerprint (written before it was recorded) is used with a warning that it was not checked."""
        if prior is None:
            return
        recorded = self.base_fingerprint
        if not self.comparable_fingerprint:
            what = f"the fingerprint of the prior its concepts were learned on ('{self.base_model}')"
            state = f"does not record {what}" if recorded is None else f"records {what} by another scheme"
            warnings.warn(
                f"{self.folder / CONCEPTS_JSON} {state}, so it cannot be checked against the prior given, "
                f"{prior.describe()}. If that is the prior they were learned on, record it: "
                f"`python -m diffexpand.concepts.migrate {self.folder} --prior {prior.name}`",
                stacklevel=3,
            )
            return
        if recorded == prior.fingerprint:
            return
        replaced = ""
        if prior.name == self.base_model:
            replaced = ": the same name, other weights (the prior changed after the concepts were learned)"
        on_prior = (
            "" if prior.name == portable(DEFAULT_PRIOR) else f" --model.init_args.pretrained={prior.name}"
        )
        raise PriorMismatchError(
            f"The concept folder {self.folder} was learned on the prior {self.learned_on}, but the prior "
            f"given is {prior.describe()}{replaced}. Tokens and a LoRA learned on one prior do not fit "
            f"another. Re-learn the concepts on this prior (`{LEARN}{on_prior}`, then point "
            "model.init_args.concepts to its output folder), or give the prior they were learned on "
            "(model.init_args.pretrained)."
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


def concept_remedy(path: Path) -> str:
    """What to do about a damaged or wrong file of a concept folder."""
    if Path(path).resolve().is_relative_to(REPO_ROOT / "assets"):
        return how_to_replace(path)
    return f"learn the concepts again (`{LEARN}`, model.init_args.output_dir names the folder)."


def write_concepts_json(concepts: ConceptSet) -> None:
    text = json.dumps(concepts.metadata(), indent=2, ensure_ascii=False) + "\n"
    atomic_write_bytes(concepts.folder / CONCEPTS_JSON, text.encode("utf-8"))


def save_concepts(
    folder,
    embeddings: torch.Tensor,
    class_names,
    metaclasses,
    prompt_template: str,
    base_model: str | ModelIdentity,
    lora_layers: dict | None,
) -> None:
    """Write a concept folder. `base_model`: the identity of the prior the concepts were learned on
    (`parts.identity` of parts from `load_sd_components`), or its hub id / folder, fingerprinted here.
    `lora_layers` None: tokens only (textual inversion), no LoRA file."""
    folder = Path(folder)
    identity = base_model if isinstance(base_model, ModelIdentity) else _identity_of(base_model)
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
    else:  # tokens only: a LoRA left by an earlier export into this folder would be loaded with them
        (folder / LORA_FILE).unlink(missing_ok=True)
    concepts = ConceptSet(
        folder,
        list(class_names),
        list(metaclasses),
        n,
        prompt_template,
        identity.name if identity else portable(base_model),
        identity.fingerprint if identity else None,
    )
    write_concepts_json(concepts)


def _identity_of(base_model) -> ModelIdentity | None:
    from diffexpand.models.identity import model_identity
    from diffexpand.paths import in_repo

    return model_identity(in_repo(base_model) or base_model)


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


def rewrite_concepts_json(folder, prior: ModelIdentity | None = None) -> ConceptSet:
    """Rewrite a folder's concepts.json in the current format (adds the stock prompts to an older one);
    embeddings and LoRA are not touched. `prior`: the identity of the prior the concepts were learned on,
    recorded in place of a missing fingerprint; one that contradicts the recorded fingerprint is refused."""
    concepts = read_concepts(folder)
    if prior is not None:
        if concepts.comparable_fingerprint and concepts.base_fingerprint != prior.fingerprint:
            raise PriorMismatchError(
                f"{concepts.folder / CONCEPTS_JSON} records that its concepts were learned on "
                f"{concepts.learned_on}, not on {prior.describe()}; it is left as it is. Give the prior "
                "they were learned on, or re-learn them on this one."
            )
        concepts.base_model, concepts.base_fingerprint = prior.name, prior.fingerprint
    write_concepts_json(concepts)
    return concepts


def apply_concepts(parts, folder, class_names: list[str] | None = None, lora: bool = True) -> ConceptSet:
    """Load a concept folder into loaded SD parts (tokens, and the LoRA unless `lora=False`), after
    checking its classes, the prior it was learned on (`parts.identity`) and every file it loads. Nothing
    is changed when a check fails, except on a failure while the LoRA loads, after which the UNet is
    left without it."""
    concepts = read_concepts(folder)
    if class_names is not None:
        concepts.check_matches(class_names)
    concepts.check_learned_on(getattr(parts, "identity", None))
    width = parts.text_encoder.get_input_embeddings().weight.shape[1]
    rows = [_embedding_rows(concepts, c, width) for c in range(len(concepts.class_names))]  # checked first
    lora_state = _lora_state(concepts) if lora else None
    n_classes, n_tokens = len(concepts.class_names), concepts.tokens_per_class
    check_tokens_are_new(parts.tokenizer, n_classes, n_tokens)
    if lora_state is not None:
        _load_lora(parts.unet, lora_state, concepts)
    ids = add_placeholder_tokens(parts.tokenizer, parts.text_encoder, n_classes, n_tokens)
    table = parts.text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        for c, class_rows in enumerate(rows):
            table[ids[c].to(table.device)] = class_rows.to(table.dtype).to(table.device)
    return concepts


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file of the concept folder; a damaged one is named, with what to do."""
    return load_safetensors(path, remedy=concept_remedy(path))


def _embedding_rows(concepts: ConceptSet, class_index: int, width: int) -> torch.Tensor:
    """Class `class_index`'s (n, D) rows, checked against concepts.json and the text encoder: one
    tensor named after the class's first token, one row per token concepts.json lists for the class,
    as wide as the text encoder's embeddings."""
    path = concepts.folder / embedding_file(class_index)
    if not path.is_file():
        raise ConceptFolderError(f"{path} is missing; {concept_remedy(path)}")
    tensors = _read_tensors(path)
    token, n = class_token(class_index), concepts.tokens_per_class
    rows = tensors.get(token)
    if rows is None:
        problem = f"no tensor named {token!r}"
    elif rows.ndim != 2:
        problem = f"{token!r} has {rows.ndim} dimensions, not 2 (tokens x width)"
    elif rows.shape[0] != n:
        problem = (
            f"{token!r} has {rows.shape[0]} row(s), but concepts.json lists {n} tokens for class "
            f"{class_index} ({', '.join(placeholder_tokens(class_index, n))})"
        )
    elif rows.shape[1] != width:
        problem = (
            f"{token!r} rows are {rows.shape[1]} wide, but the text encoder's embeddings are {width} wide "
            "(learned on a model of another width?)"
        )
    elif not rows.is_floating_point():
        problem = f"{token!r} holds {rows.dtype}, not floating point numbers"
    else:
        if not bool(rows.isfinite().all()):
            raise ConceptFolderError(f"{path} holds NaN or Inf; {concept_remedy(path)}")
        return rows
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    raise ConceptFolderError(
        f"{path}: {problem}. Expected {token!r} of shape {(n, width)}, found {found}; {concept_remedy(path)}"
    )


def _lora_state(concepts: ConceptSet) -> dict[str, torch.Tensor] | None:
    """The folder's UNet LoRA weights (None when it has no LoRA file), read and checked for UNet keys."""
    path = concepts.folder / LORA_FILE
    if not path.is_file():
        return None
    state = _read_tensors(path)
    if not any(key.startswith("unet.") for key in state):
        raise ConceptFolderError(
            f"{path} holds no UNet LoRA weights (no key starts with 'unet.'; found {sorted(state)[:3]}); "
            f"{concept_remedy(path)}"
        )
    return state


def _load_lora(unet, state: dict[str, torch.Tensor], concepts: ConceptSet) -> None:
    path = concepts.folder / LORA_FILE
    try:
        unet.load_lora_adapter(dict(state), prefix="unet", adapter_name="concepts")
    except Exception as err:  # peft's shape and module errors; diffusers removes the half-loaded adapter
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[-1].strip()
        raise ConceptFolderError(
            f"{path} does not fit the UNet it is applied to ({first_line}); {concept_remedy(path)}"
        ) from err
