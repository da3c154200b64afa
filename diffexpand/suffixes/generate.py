"""Generated Diff-II suffixes, as in the paper: caption the real training images with an image
captioning model (BLIP in the paper), then ask a language model to summarise the captions into at
most `n` short context phrases that describe scene, pose or viewpoint but not the object's class.

The captioner is any transformers image-to-text model (hub id or local folder). The language model
is either a local transformers text-generation model (hub id or folder) or, written
`openai:<model name>`, an OpenAI-compatible chat endpoint whose URL and key come from the
environment (DIFFEXPAND_LLM_BASE_URL or OPENAI_BASE_URL; DIFFEXPAND_LLM_API_KEY or OPENAI_API_KEY),
never from a config file.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request

import torch

PROMPT = (
    "Here are captions of photos of {metaclass}s:\n{captions}\n\n"
    "Summarise the settings these photos show into at most {n} short phrases (2 to 6 words each) that "
    "could follow 'a photo of a {metaclass}' — background, pose, viewpoint, lighting — without naming "
    "any kind or breed of {metaclass}. Answer with one phrase per line and nothing else."
)


class SuffixGenerationError(RuntimeError):
    pass


@torch.no_grad()
def caption_images(
    images, captioner: str, device: str = "cpu", batch_size: int = 16, max_new_tokens: int = 30
) -> list[str]:
    """Captions of PIL images from a transformers image-to-text model."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from diffexpand.models.loading import ModelNotAvailableError

    try:
        processor = AutoProcessor.from_pretrained(captioner)
        model = AutoModelForImageTextToText.from_pretrained(captioner).to(device).eval()
    except OSError as err:
        raise ModelNotAvailableError(
            f"cannot load the captioning model {captioner!r} (hub id or local folder); download it "
            f"where there is network and pass the folder as suffix_captioner. ({err})"
        ) from err
    captions = []
    for start in range(0, len(images), batch_size):
        inputs = processor(images=images[start : start + batch_size], return_tensors="pt").to(device)
        ids = model.generate(**inputs, max_new_tokens=max_new_tokens)
        captions += [c.strip() for c in processor.batch_decode(ids, skip_special_tokens=True)]
    return captions


def llm_request(metaclass: str, captions: list[str], n: int) -> str:
    unique = list(dict.fromkeys(c for c in captions if c))
    return PROMPT.format(metaclass=metaclass, n=n, captions="\n".join(f"- {c}" for c in unique))


def _env(*names: str) -> str | None:
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


def ask_openai_compatible(model: str, prompt: str, timeout: float = 120.0) -> str:
    base = _env("DIFFEXPAND_LLM_BASE_URL", "OPENAI_BASE_URL") or "https://api.openai.com/v1"
    key = _env("DIFFEXPAND_LLM_API_KEY", "OPENAI_API_KEY")
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0}
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(
        base.rstrip("/") + "/chat/completions", json.dumps(body).encode(), headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read())
    except (urllib.error.URLError, OSError) as err:  # never echo the key
        raise SuffixGenerationError(
            f"language model endpoint {base} failed ({err}); set DIFFEXPAND_LLM_BASE_URL and "
            "DIFFEXPAND_LLM_API_KEY (or OPENAI_BASE_URL / OPENAI_API_KEY) in the environment"
        ) from err
    try:
        return answer["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as err:
        raise SuffixGenerationError(f"unexpected answer from {base}: {str(answer)[:200]}") from err


@torch.no_grad()
def ask_local_model(model: str, prompt: str, max_new_tokens: int = 200) -> str:
    from transformers import pipeline

    generator = pipeline("text-generation", model=model)
    out = generator(prompt, max_new_tokens=max_new_tokens, do_sample=False, return_full_text=False)
    return out[0]["generated_text"]


def parse_phrases(answer: str, n: int) -> list[str]:
    """One phrase per line; bullets, numbering and quotes removed; duplicates and empties dropped."""
    phrases = []
    for line in answer.splitlines():
        phrase = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line).strip().strip("\"'").rstrip(".").strip()
        if phrase and phrase.lower() not in {p.lower() for p in phrases}:
            phrases.append(phrase)
    return phrases[:n]


def summarise_captions(captions: list[str], llm: str, metaclass: str, n: int = 10) -> list[str]:
    prompt = llm_request(metaclass, captions, n)
    if llm.startswith("openai:"):
        answer = ask_openai_compatible(llm.removeprefix("openai:"), prompt)
    else:
        answer = ask_local_model(llm, prompt)
    phrases = parse_phrases(answer, n)
    if not phrases:
        raise SuffixGenerationError(f"the language model {llm!r} returned no usable phrase: {answer[:200]!r}")
    return phrases


def generate_suffixes(
    images, metaclasses: list[str], captioner: str, llm: str, n: int = 10, device: str = "cpu"
) -> list[str]:
    """Caption every real image, then summarise all captions into at most `n` suffixes."""
    captions = caption_images(images, captioner, device)
    words = sorted(set(metaclasses))
    return summarise_captions(captions, llm, words[0] if len(words) == 1 else "object", n)
