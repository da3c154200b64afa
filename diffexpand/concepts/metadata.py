"""concepts.json: built in one place for writing, and checked field by field on reading, since a concept
folder may come from anyone (it is input, like a dataset).

Each class carries its prompt in two forms. `prompt` writes every token out ("a photo of a <class_7>
<class_7>_1 <class_7>_2 <class_7>_3 shoe"): the form this project tokenises. `stock_prompt` names the class
by its first token only ("a photo of a <class_7> shoe"): a stock diffusers pipeline that loaded the class's
embedding file with `load_textual_inversion` writes the other tokens out itself (`maybe_convert_prompt`),
so given `prompt` it would expand every token again (16 slots instead of 4). Both become the same token ids.

`base_model` names the prior the concepts were learned on and its content fingerprint
(diffexpand.models.identity): {"name": "assets/tiny-fashion-prior-v3", "fingerprint": "sd-files-v1:…"}.
Folders written before the fingerprint was recorded hold the name only (a string): they read, but cannot
be checked against a prior until `python -m diffexpand.concepts.migrate FOLDER --prior PRIOR` adds it.
"""

from __future__ import annotations

import re
from string import Formatter

from .tokens import class_token, concept_phrase, placeholder_tokens

CONCEPTS_JSON = "concepts.json"
TEMPLATE_FIELDS = ("tokens", "metaclass")
MAX_TOKENS_PER_CLASS = 75  # CLIP's 77 positions less the start and end tokens
FINGERPRINT = re.compile(r"[a-z0-9-]+:[0-9a-f]{64}")

PROMPT_FORMS = {
    "prompt": (
        "every token of the class written out; the form diffexpand tokenises "
        "(diffexpand.concepts.ConceptSet.prompt)"
    ),
    "stock_prompt": (
        "for a stock diffusers pipeline after pipe.load_textual_inversion(<embedding_file>, "
        "token=<first token>) for every class and pipe.load_lora_weights(<this folder>): the class's first "
        "token only, which the pipeline expands to all of the class's tokens itself; giving it `prompt` "
        "would expand each token again"
    ),
}


class ConceptFolderError(ValueError):
    """concepts.json (or an embedding file) is malformed or contradicts itself."""


class PriorMismatchError(ConceptFolderError):
    """A concept folder is applied to another prior than the one it was learned on."""


def check_template(template) -> None:
    """A prompt template may name {tokens} (required) and {metaclass}, and nothing else: no attribute or
    index lookups, conversions or format specs (str.format would evaluate them)."""
    if not isinstance(template, str):
        raise ConceptFolderError(f"prompt_template must be a string, got {type(template).__name__}")
    try:
        parts = list(Formatter().parse(template))
    except ValueError as err:
        raise ConceptFolderError(f"prompt_template {template!r} is not a valid template: {err}") from None
    fields = [(name, spec, conversion) for _, name, spec, conversion in parts if name is not None]
    bad = [name for name, spec, conversion in fields if name not in TEMPLATE_FIELDS or spec or conversion]
    if bad or "tokens" not in [name for name, _, _ in fields]:
        raise ConceptFolderError(
            f"prompt_template {template!r} must contain {{tokens}} and may contain {{metaclass}}, nothing "
            f"else (found {['{' + str(b) + '}' for b in bad]})"
        )


def stock_template(template: str) -> str:
    """The template of the stock form: {tokens} becomes {token} (the class's first token)."""
    out = []
    for literal, name, _, _ in Formatter().parse(template):
        out.append(literal.replace("{", "{{").replace("}", "}}"))
        if name is not None:
            out.append("{token}" if name == "tokens" else "{" + name + "}")
    return "".join(out)


def with_suffix(text: str, suffix: str) -> str:
    """`text` then `suffix`, after a space unless the suffix opens with punctuation (", dark" continues
    "a photo of a top" as the attribute captions of the prior v2 do: "a photo of a top, dark")."""
    if not suffix:
        return text
    return f"{text}{suffix}" if suffix[0] in ",;:." else f"{text} {suffix}".strip()


def class_prompt(template: str, class_index: int, tokens_per_class: int, metaclass: str, suffix="") -> str:
    text = template.format(tokens=concept_phrase(class_index, tokens_per_class), metaclass=metaclass)
    return with_suffix(text, suffix)


def stock_prompt(template: str, class_index: int, metaclass: str, suffix: str = "") -> str:
    return with_suffix(template.format(tokens=class_token(class_index), metaclass=metaclass), suffix)


def embedding_file(class_index: int) -> str:
    return f"embeddings/class_{class_index}.safetensors"


def base_model_field(name: str, fingerprint: str | None):
    """concepts.json's `base_model`: name and fingerprint, or the name alone where none is known."""
    return {"name": name, "fingerprint": fingerprint} if fingerprint else name


def concepts_metadata(
    class_names, metaclasses, tokens_per_class: int, template: str, base_model: str, base_fingerprint=None
):
    """The content of concepts.json."""
    n = tokens_per_class
    classes = [
        {
            "index": c,
            "name": name,
            "tokens": placeholder_tokens(c, n),
            "metaclass": metaclasses[c],
            "embedding_file": embedding_file(c),
            "prompt": class_prompt(template, c, n, metaclasses[c]),
            "stock_prompt": stock_prompt(template, c, metaclasses[c]),
        }
        for c, name in enumerate(class_names)
    ]
    return {
        "base_model": base_model_field(base_model, base_fingerprint),
        "tokens_per_class": n,
        "prompt_template": template,
        "stock_prompt_template": stock_template(template),
        "prompt_forms": PROMPT_FORMS,
        "classes": classes,
    }


def parse_concepts_metadata(meta, where: str) -> dict:
    """The fields a ConceptSet is made of, after checking every field of `meta` (the parsed JSON of
    `where`). Fields derived from others (tokens, prompts, file names) must equal what they derive to;
    those added later (prompt, stock_prompt, stock_prompt_template) may be missing, as in older folders."""

    def fail(message: str):
        raise ConceptFolderError(f"{where}: {message}")

    if not isinstance(meta, dict):
        fail(f"must hold a JSON object, got {type(meta).__name__}")
    missing = [k for k in ("base_model", "tokens_per_class", "prompt_template", "classes") if k not in meta]
    if missing:
        fail(f"missing {missing}")
    n = meta["tokens_per_class"]
    if type(n) is not int or not 1 <= n <= MAX_TOKENS_PER_CLASS:
        fail(f"tokens_per_class must be an integer from 1 to {MAX_TOKENS_PER_CLASS}, got {n!r}")
    try:
        check_template(meta["prompt_template"])
    except ConceptFolderError as err:
        fail(str(err))
    base_model, base_fingerprint = parse_base_model(meta["base_model"], fail)
    classes = meta["classes"]
    if not isinstance(classes, list) or not classes or not all(isinstance(c, dict) for c in classes):
        fail("classes must be a non-empty list of objects")
    indices = [c.get("index") for c in classes]
    if any(type(i) is not int for i in indices) or sorted(indices) != list(range(len(classes))):
        fail(f"class indices must be 0 … {len(classes) - 1}, each once; got {indices}")
    classes = sorted(classes, key=lambda c: c["index"])
    for c in classes:
        for key in ("name", "metaclass"):
            if not isinstance(c.get(key), str) or not c[key]:
                fail(f"classes[{c['index']}].{key} must be a non-empty string, got {c.get(key)!r}")
    fields = {
        "class_names": [c["name"] for c in classes],
        "metaclasses": [c["metaclass"] for c in classes],
        "tokens_per_class": n,
        "prompt_template": meta["prompt_template"],
        "base_model": base_model,
        "base_fingerprint": base_fingerprint,
    }
    expected = concepts_metadata(
        fields["class_names"],
        fields["metaclasses"],
        n,
        fields["prompt_template"],
        base_model,
        base_fingerprint,
    )
    if "stock_prompt_template" in meta and meta["stock_prompt_template"] != expected["stock_prompt_template"]:
        fail(
            f"stock_prompt_template {meta['stock_prompt_template']!r} does not match prompt_template "
            f"(expected {expected['stock_prompt_template']!r})"
        )
    for c, want in zip(classes, expected["classes"], strict=True):
        required = {"tokens"}
        for key in ("tokens", "embedding_file", "prompt", "stock_prompt"):
            if (key in required or key in c) and c.get(key) != want[key]:
                fail(f"classes[{c['index']}].{key} must be {want[key]!r}, got {c.get(key)!r}")
    return fields


def parse_base_model(value, fail) -> tuple[str, str | None]:
    """(name, fingerprint) of concepts.json's `base_model`; the fingerprint is None in older folders."""
    if isinstance(value, str) and value:
        return value, None
    if isinstance(value, dict) and set(value) == {"name", "fingerprint"}:
        name, fingerprint = value["name"], value["fingerprint"]
        if not isinstance(name, str) or not name:
            fail(f"base_model.name must be a non-empty string, got {name!r}")
        if not isinstance(fingerprint, str) or not FINGERPRINT.fullmatch(fingerprint):
            fail(f"base_model.fingerprint must look like 'sd-files-v1:<64 hex digits>', got {fingerprint!r}")
        return name, fingerprint
    fail(
        'base_model must be {"name": <hub id or folder>, "fingerprint": <of the prior>} (or, in older '
        f"folders, the name alone), got {value!r}"
    )
