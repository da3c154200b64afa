"""Built-in Diff-II suffix presets, one list per dataset.

The paper derives its suffixes by captioning the training images with BLIP and asking a language
model to summarise the captions into at most ten short context phrases (appendix A.5.1). These lists
are our own phrases of that kind — scene, pose, viewpoint, lighting — written for each dataset, not a
copy of the paper's lists; generate dataset-specific ones with `diffexpand.suffixes.generate`.
"""

from __future__ import annotations

from itertools import combinations, product

from diffexpand.data.attributes import ATTRIBUTE_WORDS


def attribute_suffixes() -> list[str]:
    """Every suffix the attribute-caption prior (v2) was trained on: each attribute word alone, then
    each pair of words from two attributes, in caption order and form (", dark", ..., ", dark, patterned",
    ...: appended to "a photo of a top" they give its captions)."""
    singles = [f", {word}" for words in ATTRIBUTE_WORDS.values() for word in words]
    pairs = [
        f", {a}, {b}"
        for first, second in combinations(ATTRIBUTE_WORDS.values(), 2)
        for a, b in product(first, second)
    ]
    return singles + pairs


SUFFIX_PRESETS: dict[str, list[str]] = {
    "cub": [
        "perched on a thin branch",
        "standing on the ground",
        "flying against a blue sky",
        "near the water",
        "among green leaves",
        "on a wooden fence",
        "in the snow",
        "with its wings spread",
        "seen from the side",
        "in soft morning light",
    ],
    "waterbirds": [
        "perched on a thin branch",
        "standing on the ground",
        "flying against a blue sky",
        "near the water",
        "among green leaves",
        "seen from the side",
        "with its wings spread",
    ],
    "aircraft": [
        "on the runway",
        "taking off",
        "in a clear blue sky",
        "above the clouds",
        "parked at the gate",
        "landing at sunset",
        "on the taxiway",
        "in a hangar",
        "seen from below",
        "on an overcast day",
    ],
    "cars": [
        "on a city street",
        "parked in a lot",
        "on a country road",
        "in a showroom",
        "at night",
        "in the rain",
        "seen from the front",
        "seen from the side",
        "on a race track",
        "in a parking garage",
    ],
    "pets": [
        "lying on a sofa",
        "sitting on the grass",
        "indoors on a rug",
        "playing with a toy",
        "in the sunlight",
        "a close-up portrait",
        "sleeping in a basket",
        "looking at the camera",
        "on a wooden floor",
        "outdoors in a garden",
    ],
    "flowers": [
        "in a garden",
        "with green leaves",
        "a close-up",
        "in a vase",
        "in bright sunlight",
        "with a blurred background",
        "with water drops",
        "in a field",
        "seen from above",
        "at dusk",
    ],
    "dtd": [
        "a close-up",
        "in natural light",
        "on a flat surface",
        "a fabric sample",
        "on a wall",
        "seen from above",
        "with fine detail",
        "in soft shadow",
    ],
    "caltech101": [
        "on a white background",
        "in its natural setting",
        "seen from the side",
        "a close-up",
        "in bright light",
        "outdoors",
        "indoors",
        "a sketch",
    ],
    # The first tiny prior (v1) only knows the Fashion-MNIST metaclass prompts; unseen words still move the
    # text embedding, which is what the noisy first stage of Diff-II uses them for.
    "fashion_mnist": [
        "seen from the front",
        "folded",
        "on a plain background",
        "small",
        "large",
        "dark",
        "light",
        "with a pattern",
    ],
    # For a prior trained on attribute captions ("a photo of a top, dark, patterned"): the whole
    # vocabulary its text encoder learned, in the form its captions use (18, more than the paper's ten:
    # the subset a benchmark uses is chosen on the validation split, as some words lean on fine classes).
    "fashion_mnist_attributes": attribute_suffixes(),
}


def preset(name: str) -> list[str]:
    if name not in SUFFIX_PRESETS:
        raise ValueError(f"unknown suffix preset {name!r}; available: {', '.join(sorted(SUFFIX_PRESETS))}")
    return list(SUFFIX_PRESETS[name])
