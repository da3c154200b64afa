"""The captioner of the tiny prior v2: attribute words measured from pixels, relative to the metaclass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datamodules.fashion_mnist import FashionMNISTDataModule
from diffexpand.data import fashion_mnist as fm
from diffexpand.data.attributes import (
    ATTRIBUTE_WORDS,
    AttributeCaptioner,
    attribute_caption,
    images_to_gray_uint8,
    measure_attributes,
)
from diffexpand.evaluation.synthetic_quality import fashion_mnist_test_images, load_synthetic


def _rectangle(width: int, height: int, level: int, stripes: bool = False, size: int = 32) -> np.ndarray:
    image = np.zeros((size, size), np.uint8)
    top, left = (size - height) // 2, (size - width) // 2
    image[top : top + height, left : left + width] = level
    if stripes:  # every other column darker: high adjacent-pixel differences inside the garment
        image[top : top + height, left : left + width : 2] = level // 2
    return image


def test_each_measure_moves_with_what_it_names():
    images = np.stack(
        [
            _rectangle(10, 20, 100),
            _rectangle(10, 20, 220),
            _rectangle(10, 20, 220, stripes=True),
            _rectangle(24, 12, 220),
        ]
    )
    v = measure_attributes(images)
    assert v["tone"][0] < v["tone"][1]  # darker garment, lower tone
    assert v["texture"][2] > v["texture"][1] == 0  # stripes vs a flat fill
    assert v["width"][3] > 1 > v["width"][1]  # wider than tall vs taller than wide
    # the same numbers whichever way the garment faces (the prior trains with horizontal flips)
    flipped = measure_attributes(images[:, :, ::-1])
    for name in v:
        np.testing.assert_allclose(flipped[name], v[name])


def test_captioner_splits_each_metaclass_into_thirds_and_never_names_the_fine_class():
    x, y = fm.load_fashion_mnist("test")
    pixels = fm.resize_uint8(x, 32)
    metas = [fm.METACLASS_OF_CLASS[c] for c in y]
    captioner = AttributeCaptioner.fit(pixels, metas)
    words = captioner.words(pixels, metas)
    vocabulary = {w for pair in ATTRIBUTE_WORDS.values() for w in pair}
    assert {w for ws in words for w in ws} == vocabulary
    for meta in fm.METACLASSES:
        mine = [ws for ws, m in zip(words, metas, strict=True) if m == meta]
        share_dark = np.mean(["dark" in ws for ws in mine])
        assert 0.30 < share_dark < 0.36, (meta, share_dark)
    # a caption is the metaclass caption and attribute words; no word is a fine class name
    assert not vocabulary & {part.lower() for name in fm.CLASS_NAMES for part in name.split("/")}
    for m, ws in zip(metas[:50], words[:50], strict=True):
        caption = attribute_caption("a photo of a {}", m, ws)
        assert caption.split(", ") == [f"a photo of a {m}", *ws]
    # "dark" images really are darker than "light" ones of the same metaclass
    tone = measure_attributes(pixels)["tone"]
    for meta in fm.METACLASSES:
        dark = [t for t, ws, m in zip(tone, words, metas, strict=True) if m == meta and "dark" in ws]
        light = [t for t, ws, m in zip(tone, words, metas, strict=True) if m == meta and "light" in ws]
        assert max(dark) < min(light)


def test_captioner_file_round_trips_and_a_broken_one_is_named(tmp_path):
    captioner = AttributeCaptioner({"top": {"tone": (1.0, 2.0), "texture": (3.0, 4.0), "width": (0.5, 0.9)}})
    captioner.save(tmp_path)
    assert AttributeCaptioner.load(tmp_path).thresholds == captioner.thresholds
    (tmp_path / "captioner.json").write_text('{"thresholds": {"top": {"tone": [1, 2]}}}')
    with pytest.raises(ValueError, match="captioner.json.*expected"):
        AttributeCaptioner.load(tmp_path)
    with pytest.raises(ValueError, match="no attribute thresholds for metaclass 'shoe'"):
        captioner.words(np.zeros((1, 32, 32), np.uint8), ["shoe"])


def test_caption_form_is_what_a_diffii_suffix_appends():
    assert attribute_caption("a photo of a {}", "top", ("dark", "wide")) == "a photo of a top, dark, wide"
    assert (
        attribute_caption("a photo of a {}", "top", ("dark", "wide"), [False, True])
        == "a photo of a top, wide"
    )
    assert attribute_caption("a photo of a {}", "bag", ()) == "a photo of a bag"


def test_generated_images_are_measured_like_training_images():
    gray = np.stack([_rectangle(12, 20, 200), _rectangle(20, 12, 90)])
    as_generated = torch.from_numpy(gray).float().div(127.5).sub(1)[:, None].expand(-1, 3, -1, -1)
    np.testing.assert_array_equal(images_to_gray_uint8(as_generated), gray)


def test_datamodule_attribute_captions_drop_words_per_draw():
    torch.manual_seed(0)
    dm = FashionMNISTDataModule(caption="attributes", val_size=10, attribute_dropout=0.5)
    dm.setup("fit")
    data = dm.train_set
    i = next(k for k, ws in enumerate(data.attributes) if len(ws) == 3)
    meta = fm.METACLASS_OF_CLASS[int(data.labels[i])]
    seen = {data[i]["caption"] for _ in range(200)}
    assert all(c.startswith(f"a photo of a {meta}") for c in seen)
    assert len(seen) == 8  # every subset of the three words, the plain caption included
    with pytest.raises(ValueError, match="attribute_dropout"):
        FashionMNISTDataModule(caption="attributes", attribute_dropout=1.5)


def test_real_and_synthetic_images_reach_the_metrics_by_one_resize(tmp_path):
    from PIL import Image

    real = fashion_mnist_test_images(3)
    assert real.shape == (3, 3, 32, 32)
    x, _ = fm.load_fashion_mnist("test")
    expected = fm.resize_uint8(x[:3], 32).float().div(127.5).sub(1)
    torch.testing.assert_close(real[:, :1], expected)
    # a 28x28 set is brought to 32 by the same path: identical to the real reference
    for i in range(3):
        Image.fromarray(x[i]).convert("RGB").save(tmp_path / f"{i}.png")
    (tmp_path / "metadata.jsonl").write_text(
        "".join(f'{{"file_name": "{i}.png", "label": 0, "id": "r{i}"}}\n' for i in range(3))
    )
    images, _ = load_synthetic(tmp_path)
    torch.testing.assert_close(images, real)
