"""Dataset readers on small fake trees in each on-disk format; missing data gives one clear error."""

import numpy as np
import pytest
from PIL import Image

from diffexpand.data.fashion_mnist import DatasetNotFoundError
from diffexpand.data.readers import available_datasets, read_dataset


def _png(path, color=(200, 10, 10), size=(20, 14)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_all_paper_datasets_have_readers():
    expected = {"imagefolder", "cub", "aircraft", "pets", "cars", "flowers", "caltech101", "dtd"}
    expected |= {"waterbirds", "fashion_mnist"}
    assert expected <= set(available_datasets())


def test_imagefolder_train_and_test_splits(tmp_path):
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            for k in range(3):
                _png(tmp_path / split / cls / f"{k}.png")
    data = read_dataset("imagefolder", str(tmp_path), "train", metaclass="animal")
    assert data.class_names == ["cat", "dog"] and data.metaclasses == ["animal", "animal"]
    assert np.bincount(data.labels).tolist() == [3, 3]
    assert data.image(0).mode == "RGB"
    test = read_dataset("imagefolder", str(tmp_path), "test")
    assert not set(data.ids) & {f"../test/{i}" for i in test.ids}


def test_cub_layout(tmp_path):
    base = tmp_path / "CUB_200_2011"
    classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross"]
    (base).mkdir()
    (base / "classes.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    images, labels, split = [], [], []
    for k in range(6):
        c = k % 2
        rel = f"{classes[c]}/img_{k}.jpg"
        _png(base / "images" / rel)
        images.append(f"{k + 1} {rel}\n")
        labels.append(f"{k + 1} {c + 1}\n")
        split.append(f"{k + 1} {int(k < 4)}\n")
    (base / "images.txt").write_text("".join(images))
    (base / "image_class_labels.txt").write_text("".join(labels))
    (base / "train_test_split.txt").write_text("".join(split))
    train = read_dataset("cub", str(tmp_path), "train")
    test = read_dataset("cub", str(tmp_path), "test")
    assert train.class_names == ["Black footed Albatross", "Laysan Albatross"]
    assert train.metaclasses == ["bird", "bird"]
    assert len(train) == 4 and len(test) == 2 and not set(train.ids) & set(test.ids)


def test_waterbirds_layout_keeps_place(tmp_path):
    rows = ["img_id,img_filename,y,split,place,place_filename"]
    for k in range(6):
        _png(tmp_path / f"001.x/{k}.jpg")
        rows.append(f"{k},001.x/{k}.jpg,{k % 2},{[0, 0, 0, 1, 2, 2][k]},{(k // 2) % 2},p.jpg")
    (tmp_path / "metadata.csv").write_text("\n".join(rows) + "\n")
    train = read_dataset("waterbirds", str(tmp_path), "train")
    test = read_dataset("waterbirds", str(tmp_path), "test")
    assert len(train) == 3 and len(test) == 2
    assert train.extras["place"].tolist() == [0, 0, 1]


@pytest.mark.parametrize("name", ["aircraft", "pets", "cars", "flowers", "dtd", "caltech101"])
def test_missing_torchvision_datasets_fail_clearly_without_network(name, tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        read_dataset(name, str(tmp_path), "train", download=True)
    assert str(tmp_path) in str(err.value) and "layout" in str(err.value)


@pytest.mark.parametrize("name", ["cub", "waterbirds", "imagefolder"])
def test_missing_root_names_the_setting(name, tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        read_dataset(name, str(tmp_path / "nowhere"), "train")


def test_unknown_dataset_and_split():
    with pytest.raises(ValueError, match="available"):
        read_dataset("imagenet-9000", None, "train")
    with pytest.raises(ValueError, match="split"):
        read_dataset("fashion_mnist", None, "val")
