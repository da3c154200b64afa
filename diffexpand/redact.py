"""Secrets never reach a saved config, a W&B run or run_settings.json.

Language-model keys come from environment variables only (diffexpand.suffixes.generate); this is the
second line of defence for a key typed into a config anyway: values under secret-looking names, values
that look like API keys, and the current values of the known key variables are replaced by "***".
"""

from __future__ import annotations

import os
import re

# whole words of a key name: "api_key", "hf_token", "secret" — not "tokens_per_class" or "tokenizer"
SECRET_NAME = re.compile(
    r"(?:^|[_\-.])(?:api[_-]?key|access[_-]?key|secret|password|passwd|token|credentials?)(?:$|[_\-.])",
    re.IGNORECASE,
)
SECRET_VALUE = re.compile(r"\b(sk-[A-Za-z0-9_\-]{16,}|hf_[A-Za-z0-9]{20,}|xox[bp]-[A-Za-z0-9\-]{10,})")
KEY_VARIABLES = ("DIFFEXPAND_LLM_API_KEY", "OPENAI_API_KEY", "WANDB_API_KEY", "HF_TOKEN")
MASK = "***"


def _known_secrets() -> list[str]:
    return [v for v in (os.environ.get(name) for name in KEY_VARIABLES) if v and len(v) >= 8]


def redact(value, key: str = "", _known=None):
    """A copy of `value` (dicts, lists, strings, scalars) with secrets masked."""
    known = _known_secrets() if _known is None else _known
    if isinstance(value, dict):
        return {k: redact(v, str(k), known) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact(v, key, known) for v in value)
    if isinstance(value, str):
        if value and SECRET_NAME.search(key):
            return MASK
        for secret in known:
            value = value.replace(secret, MASK)
        return SECRET_VALUE.sub(MASK, value)
    return value
