"""The classifier's synthetic-set filter: the agree rule, its spec, a set's subset, and the data module
dropping mislabelled images of a real Fashion-MNIST set through the default EfficientNet-Lite0 probe."""

from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.classification import ClassificationDataModule
from diffexpand.classification.set_filter import (
    SetFilterSpec,
    agreeing,
    parse_filter_spec,
    probe_agree,
)
from diffexpand.classification.synthetic import SyntheticSet
from diffexpand.manifest import append_manifest

TROUSER, BAG = 1, 8


def test_agreeing_keeps_rows_predicted_as_their_label_and_one_per_label_left_without_any():
    probabilities = torch.tensor(
        [
            [0.8, 0.1, 0.1],  # label 0, agrees
            [0.2, 0.7, 0.1],  # label 0, read as 1: dropped
            [0.1, 0.8, 0.1],  # label 1, agrees
            [0.6, 0.1, 0.3],  # label 2, none of label 2 agrees: its most probable 2 (0.3) is kept
            [0.7, 0.2, 0.1],  # label 2, 0.1 of class 2
            [0.2, 0.4, 0.4],  # label 2 tied for the top with label 1: agrees
        ]
    )
    assert agreeing(probabilities[:5], torch.tensor([0, 0, 1, 2, 2])) == [0, 2, 3]
    assert agreeing(probabilities, torch.tensor([0, 0, 1, 2, 2, 2])) == [0, 2, 5]
    with pytest.raises(ValueError, match="must match"):
        agreeing(probabilities, torch.tensor([0, 1]))


def test_probe_agree_drops_the_images_that_lie_in_another_class():
    """Two well separated real clusters: a set image in the other label's cluster is dropped."""
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[4.0, 0.0], [0.0, 4.0]])
    real_labels = torch.tensor([0] * 5 + [1] * 5)
    real = centres[real_labels] + 0.3 * torch.randn(10, 2, generator=generator)
    set_labels = torch.tensor([0, 0, 0, 1, 1, 1])
    in_cluster = torch.tensor([0, 1, 0, 1, 0, 1])  # images 1 and 4 lie in the other class's cluster
    features = centres[in_cluster] + 0.3 * torch.randn(6, 2, generator=generator)
    (kept,) = probe_agree(real, real_labels, [features], [set_labels], num_classes=2)
    assert kept == [0, 2, 3, 5]


def test_filter_spec_is_checked_once_with_the_key_that_is_wrong():
    assert parse_filter_spec(None) is None
    assert parse_filter_spec({"kind": "probe_agree"}) == SetFilterSpec("probe_agree", "timm", 1e-3)
    spec = parse_filter_spec({"kind": "probe_agree", "extractor": "oracle", "weight_decay": 0})
    assert (spec.extractor, spec.weight_decay) == ("oracle", 0.0)
    for bad, message in [
        ("probe_agree", "must be a mapping"),
        ({"kind": "clip_score"}, r"synthetic_filter.kind must be one of \['probe_agree'\]"),
        ({"kind": "probe_agree", "keep": 0.5}, r"unknown key\(s\) \['keep'\]"),
        ({"kind": "probe_agree", "weight_decay": -1}, "weight_decay must be a finite number >= 0"),
        ({"kind": "probe_agree", "weight_decay": float("inf")}, "weight_decay must be a finite number"),
        ({"kind": "probe_agree", "weight_decay": True}, "weight_decay must be a finite number >= 0"),
        ({"kind": "probe_agree", "extractor": 3}, "extractor must be a kind name or a mapping"),
        (
            {"kind": "probe_agree", "extractor": {"kind": "dino"}},
            r"extractor: kind must be one of \['oracle'",
        ),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_filter_spec(bad)
    with pytest.raises(ValueError, match=r"data.init_args.synthetic_filter.kind must be"):
        ClassificationDataModule(synthetic_filter={"kind": "nope"})


def _write(folder: Path, images, labels) -> Path:
    records = []
    (folder / "images").mkdir(parents=True)
    for k, (image, label) in enumerate(zip(images, labels, strict=True)):
        image.save(folder / f"images/{k:03d}.png")
        records.append({"file_name": f"images/{k:03d}.png", "label": int(label), "id": f"i{k:03d}"})
    append_manifest(folder, records)
    return folder


def test_subset_keeps_the_chosen_records_with_their_lines_and_classes(tmp_path):
    from PIL import Image

    images = [Image.new("RGB", (8, 8), (v, v, v)) for v in (0, 60, 120, 180)]
    synthetic = SyntheticSet.read(_write(tmp_path / "set", images, [0, 1, 1, 2]), 3)
    kept = synthetic.subset([1, 3])
    assert [r["id"] for r in kept.records] == ["i001", "i003"]
    assert kept.checked.lines == [2, 4] and kept.by_class == {1: [0], 2: [1]}
    assert np.asarray(kept.image(0)).mean() == 60
    for bad in ([1, 1], [4], [-1]):
        with pytest.raises(ValueError, match="distinct and in"):
            synthetic.subset(bad)


def test_data_module_trains_only_on_the_set_images_the_probe_puts_in_their_class(tmp_path):
    """A set of real Fashion-MNIST trousers and bags outside the 5-shot subset, a third of them labelled
    as the other class: the default probe (ImageNet EfficientNet-Lite0 features of the five real images
    per class, which also reads some trousers as dresses and bags as other classes) drops every mislabelled
    image and keeps at least half of the rest."""
    from diffexpand.data.readers import read_dataset
    from diffexpand.data.subsets import few_shot_indices

    data = read_dataset("fashion_mnist", None, "train")
    reserved = few_shot_indices(data.labels, 20, 9)  # not in the 5-shot subset of seed 0
    picked = [int(i) for i in reserved if data.labels[i] in (TROUSER, BAG)][:24]
    labels = [int(data.labels[i]) for i in picked]
    wrong = set(range(0, 24, 3))
    labels = [(BAG if y == TROUSER else TROUSER) if k in wrong else y for k, y in enumerate(labels)]
    folder = _write(tmp_path / "set", [data.image(i) for i in picked], labels)
    module = ClassificationDataModule(
        real={"dataset": "fashion_mnist", "shots": 5, "seed": 0},
        synthetic=[str(folder)],
        synthetic_filter={"kind": "probe_agree"},
    )
    module.setup("fit")
    assert not set(picked) & {int(i) for i in module.indices}  # the set holds no image trained on as real
    (trained,) = module.train_set.synthetic
    kept = {int(r["id"][1:]) for r in trained.records}
    assert not kept & wrong
    assert len(kept) >= 8  # of the 16 correctly labelled
    assert module.filter_kept == {str(folder): (len(kept), 24)}
    assert set(module.train_set.candidates) == {TROUSER, BAG}


def test_under_ddp_every_rank_trains_on_the_images_rank_zero_kept(tmp_path, monkeypatch):
    """Ranks that each fitted their own probe could keep different images; a rank other than 0 takes
    rank 0's indices from the broadcast and computes nothing itself."""
    from types import SimpleNamespace

    from PIL import Image

    images = [Image.new("RGB", (8, 8), (v, v, v)) for v in (0, 60, 120, 180)]
    folder = _write(tmp_path / "set", images, [0, 0, 1, 1])
    module = ClassificationDataModule(
        real={"dataset": "fashion_mnist", "shots": 1, "seed": 0},
        synthetic=[str(folder)],
        synthetic_filter={"kind": "probe_agree"},
    )
    sent = []

    def broadcast(obj, src):
        sent.append((obj, src))
        return [[1, 2]]  # what rank 0 kept

    def computed_here(*_):
        raise AssertionError("a rank other than 0 fitted its own probe")

    monkeypatch.setattr(module, "_filter_indices", computed_here)
    strategy = SimpleNamespace(root_device="cpu", broadcast=broadcast)
    module.trainer = SimpleNamespace(world_size=2, is_global_zero=False, strategy=strategy)
    module.setup("fit")
    assert sent == [(None, 0)]
    assert [r["id"] for r in module.train_set.synthetic[0].records] == ["i001", "i002"]
    assert module.filter_kept == {str(folder): (2, 4)}
