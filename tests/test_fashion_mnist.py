import gzip

import numpy as np
import pytest

from datamodules.fashion_mnist import FashionMNISTDataModule
from diffexpand.data import fashion_mnist as fm
from diffexpand.data.idx import read_idx


def test_idx_reader_checks_magic_and_size(tmp_path):
    good = tmp_path / "x-idx1-ubyte.gz"
    with gzip.open(good, "wb") as fh:
        fh.write(bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + bytes([7, 8, 9]))
    assert read_idx(good).tolist() == [7, 8, 9]
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="magic"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 1]) + (5).to_bytes(4, "big") + bytes([1]))
    with pytest.raises(ValueError, match="truncated"):
        read_idx(short)


def test_missing_data_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(fm, "DEBIAN_ROOT", tmp_path / "nowhere")
    with pytest.raises(fm.DatasetNotFoundError) as err:
        fm.load_fashion_mnist("train", root=tmp_path / "empty")
    assert "apt-get install dataset-fashion-mnist" in str(err.value)
    assert "download attempt failed" in str(err.value)  # torchvision's download was tried, offline


def test_datamodule_gives_32px_rgb_with_metaclass_captions():
    dm = FashionMNISTDataModule(batch_size=16, val_size=100)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["pixel_values"].shape == (16, 3, 32, 32)
    assert batch["pixel_values"].min() >= -1 and batch["pixel_values"].max() <= 1
    for label, caption in zip(batch["label"].tolist(), batch["caption"], strict=True):
        assert caption == f"a photo of a {fm.METACLASS_OF_CLASS[label]}"
    assert len(dm.train_set) == 60000
    dm.setup("test")
    assert len(dm.test_set) == 10000


def test_metaclass_map_covers_every_class():
    assert len(fm.METACLASS_OF_CLASS) == len(fm.CLASS_NAMES) == 10
    assert set(fm.METACLASS_OF_CLASS) == set(fm.METACLASSES)
    assert np.unique(fm.METACLASS_OF_CLASS).size == 5
