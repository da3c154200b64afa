"""Did the concept learner teach the fine classes? Oracle fine-class accuracy of images generated from
the learned prompt ("a photo of a <class_i> shoe") versus the metaclass prompt alone ("a photo of a
shoe"), same seeds for all. The metaclass prompt is measured on the model with the learned LoRA (what
the tokens alone add) and, given `base_parts`, on the base model without it (what the user had)."""

from __future__ import annotations

import torch

from .prior_quality import generate_for_prompt


@torch.no_grad()
def fine_class_accuracy(
    parts,
    oracle,
    concepts,
    n_per_class: int = 200,
    steps: int = 25,
    guidance: float = 7.5,
    seed: int = 0,
    base_parts=None,
) -> dict:
    learned, metaclass_only, base, samples = [], [], [], {}
    for c, name in enumerate(concepts.class_names):
        plain_prompt = f"a photo of a {concepts.metaclasses[c]}"
        # the same seeds for both prompts: only the prompt differs
        with_tokens = generate_for_prompt(
            parts, concepts.prompt(c), n_per_class, steps, guidance, seed, key=name
        )
        without = generate_for_prompt(parts, plain_prompt, n_per_class, steps, guidance, seed, key=name)
        learned.append((oracle(with_tokens).argmax(1) == c).float().mean().item())
        metaclass_only.append((oracle(without).argmax(1) == c).float().mean().item())
        if base_parts is not None:
            plain = generate_for_prompt(
                base_parts, plain_prompt, n_per_class, steps, guidance, seed, key=name
            )
            base.append((oracle(plain).argmax(1) == c).float().mean().item())
        samples[name] = (with_tokens, without)
    result = {
        "per_class": {
            name: {"learned_prompt": a, "metaclass_prompt": b}
            for name, a, b in zip(concepts.class_names, learned, metaclass_only, strict=True)
        },
        "learned_prompt_mean": sum(learned) / len(learned),
        "metaclass_prompt_mean": sum(metaclass_only) / len(metaclass_only),
        "samples": samples,
    }
    if base:
        for name, b in zip(concepts.class_names, base, strict=True):
            result["per_class"][name]["metaclass_prompt_base_model"] = b
        result["metaclass_prompt_base_model_mean"] = sum(base) / len(base)
    return result
