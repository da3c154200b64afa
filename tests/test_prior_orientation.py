"""The prior card's orientation check: does a mirrored image count as facing the other way?"""

import pytest
import torch

from diffexpand.data.fashion_mnist import METACLASS_OF_CLASS
from diffexpand.evaluation.prior_quality import mirror_agreement, orientation_agreement


def wedges(n: int, seed: int = 0) -> torch.Tensor:
    """n noisy images of a shape that is heavy on the left (like a Fashion-MNIST shoe's toe)."""
    g = torch.Generator().manual_seed(seed)
    columns = torch.linspace(1, -1, 16).view(1, 1, 1, 16).expand(n, 1, 16, 16)
    return columns + 0.3 * torch.randn(n, 1, 16, 16, generator=g)


def test_mirror_agreement_tells_the_two_orientations_apart():
    images = wedges(40)
    template = wedges(200, seed=1).mean(0)
    assert mirror_agreement(images, template) == 1.0
    assert mirror_agreement(images.flip(-1), template) == 0.0
    half = images.clone()
    half[::2] = half[::2].flip(-1)
    assert mirror_agreement(half, template) == 0.5


def test_orientation_agreement_compares_samples_with_the_metaclass_real_images():
    shoe = METACLASS_OF_CLASS.index("shoe")
    real = wedges(30, seed=2)
    drawn_either_way = wedges(20, seed=3)
    drawn_either_way[1::2] = drawn_either_way[1::2].flip(-1)
    out = orientation_agreement({"shoe": drawn_either_way}, real, [shoe] * 30)
    assert out == {"shoe": {"samples": 0.5, "real": 1.0}}
    with pytest.raises(ValueError, match="no real image of metaclass 'bag'"):
        orientation_agreement({"bag": real}, real, [shoe] * 30)
