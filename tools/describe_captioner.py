"""How the prior v2's attribute words split each metaclass, and how they lean on the fine classes.

    python tools/describe_captioner.py

Fits the captioner on the Fashion-MNIST training split (as the prior v2's data module does) and prints,
per attribute and fine class, the share of the class's images that get the low word and the high word
(a class that ignores the attribute sits near 1/3 and 1/3).
"""

from __future__ import annotations

import argparse

import numpy as np

from diffexpand.data.attributes import ATTRIBUTE_WORDS, AttributeCaptioner
from diffexpand.data.fashion_mnist import CLASS_NAMES, METACLASS_OF_CLASS, load_fashion_mnist, resize_uint8


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--split",
        choices=["train", "test"],
        default="train",
        help="the split the captioner is fitted on and described for (the prior uses train)",
    )
    args = parser.parse_args(argv)
    images, labels = load_fashion_mnist(args.split)
    pixels = resize_uint8(images, 32)
    metaclasses = [METACLASS_OF_CLASS[y] for y in labels]
    captioner = AttributeCaptioner.fit(pixels, metaclasses)
    words = captioner.words(pixels, metaclasses)
    print("| attribute | class (metaclass) | low word | high word |")
    print("|---|---|---|---|")
    for name, (low, high) in ATTRIBUTE_WORDS.items():
        for c, class_name in enumerate(CLASS_NAMES):
            mine = [w for w, y in zip(words, labels, strict=True) if y == c]
            share_low = np.mean([low in w for w in mine])
            share_high = np.mean([high in w for w in mine])
            print(
                f"| {name} | {class_name} ({METACLASS_OF_CLASS[c]}) | {low} {share_low:.2f} | "
                f"{high} {share_high:.2f} |"
            )


if __name__ == "__main__":
    from diffexpand.cli import run_with_clear_errors  # an error of ours as one line, not a traceback

    run_with_clear_errors(main)
