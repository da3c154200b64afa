"""Real training images written as a set folder in the synthetic-set format (the ceiling row's set)."""

import json

import numpy as np
import pytest
from PIL import Image

from diffexpand.classification.synthetic import SyntheticSet
from diffexpand.data.images import image_to_tensor
from diffexpand.data.readers import LabeledImages
from diffexpand.data.real_set import write_real_set
from diffexpand.manifest import read_manifest
from diffexpand.models.vae import to_uint8


def _toy(classes=2, per_class=6) -> LabeledImages:
    labels = np.repeat(np.arange(classes), per_class)
    gray = [Image.fromarray(np.full((28, 28), 20 * i, np.uint8)) for i in range(len(labels))]
    return LabeledImages("toy", [f"c{c}" for c in range(classes)], ["thing"] * classes, labels,
                         [f"train/{i:05d}" for i in range(len(labels))],
                         lambda i: gray[i].convert("RGB"))  # fmt: skip


def test_real_set_is_a_set_the_classifier_reads_at_the_expanders_size(tmp_path):
    data, chosen = _toy(), [1, 3, 7, 8, 11]
    folder = write_real_set(tmp_path / "real", data, chosen, image_size=32, subset_seed=4)
    records = read_manifest(folder)
    assert [r["source_ids"] for r in records] == [[f"train/{j:05d}"] for j in chosen]
    assert [r["id"] for r in records] == [
        "c0000_00000",
        "c0000_00001",
        "c0001_00000",
        "c0001_00001",
        "c0001_00002",
    ]  # fmt: skip  (numbered per class, as the expander)
    assert {r["method"] for r in records} == {"real"} and {r["subset_seed"] for r in records} == {4}
    syn = SyntheticSet.read(folder, num_classes=2)
    assert {c: len(m) for c, m in syn.by_class.items()} == {0: 2, 1: 3}
    for i, j in enumerate(chosen):
        image = syn.image(i)
        assert image.size == (32, 32) and Image.open(folder / records[i]["file_name"]).mode == "RGB"
        expected = to_uint8(image_to_tensor(data.image(j), 32)[None])[0].numpy()
        assert np.array_equal(np.asarray(image), expected)  # the real image as every stage sees it
    card = (folder / "README.md").read_text()
    assert "class_label" in card and (folder / "preview.png").is_file()


def test_real_set_rerun_adds_nothing_and_another_set_is_refused(tmp_path):
    data = _toy()
    folder = write_real_set(tmp_path / "real", data, [0, 6], 32, 0)
    before = (folder / "metadata.jsonl").read_text()
    write_real_set(folder, data, [0, 6], 32, 0)
    assert (folder / "metadata.jsonl").read_text() == before
    with pytest.raises(ValueError, match="source_ids differ"):
        write_real_set(folder, data, [1, 6], 32, 0)
    with pytest.raises(ValueError, match="image_size must be a whole number of pixels >= 1, got 0"):
        write_real_set(tmp_path / "other", data, [0], 0, 0)
    with pytest.raises(ValueError, match=r"indices \[6\] repeat"):
        write_real_set(tmp_path / "other", data, [6, 0, 6], 32, 0)
    assert json.loads((folder / "run_settings.json").read_text())["image_size"] == 32
