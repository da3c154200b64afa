"""Messy image folders: convertible images become RGB, broken ones are all listed in one error (or
skipped with the same list as a warning), and each file is decoded once."""

import io

import numpy as np
import pytest
from PIL import Image

from datamodules.labeled import LabeledImageDataModule
from diffexpand.data.images import BadImageError, load_rgb, to_rgb

RNG = np.random.default_rng(0)


def _rgb(size=(24, 24)) -> Image.Image:
    return Image.fromarray(RNG.integers(0, 255, (*size[::-1], 3), dtype=np.uint8))


def _png_bytes(image: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=kwargs.pop("format", "PNG"), **kwargs)
    return buf.getvalue()


def _convertible(folder):
    """Every kind of image that must load as RGB: name -> file path."""
    gray16 = Image.fromarray((np.arange(24 * 24).reshape(24, 24) * 100).astype(np.uint16))
    rgba = _rgb().convert("RGBA")
    rgba.putalpha(0)  # fully transparent: must come out white, not black
    palette_transparent = _rgb().convert("P")
    files = {
        "gray.png": _rgb().convert("L"),
        "bilevel.png": _rgb().convert("1"),
        "palette.png": _rgb().convert("P"),
        "rgba.png": rgba,
        "cmyk.jpg": _rgb().convert("CMYK"),
        "gray16.png": gray16,
        "tiny.png": _rgb((1, 1)),
        "huge.jpg": _rgb((64, 64)).resize((5000, 4000)),
    }
    paths = {}
    for name, image in files.items():
        path = folder / name
        image.save(path)
        paths[name] = path
    path = folder / "palette_t.png"
    palette_transparent.save(path, transparency=0)
    paths["palette_t.png"] = path
    return paths


def test_convertible_images_become_rgb(tmp_path):
    for name, path in _convertible(tmp_path).items():
        image = load_rgb(path)
        assert image.mode == "RGB", name
        assert image.size == Image.open(path).size
    assert np.asarray(load_rgb(tmp_path / "rgba.png")).min() == 255  # transparent -> white background
    gray16 = np.asarray(load_rgb(tmp_path / "gray16.png"))[..., 0]
    assert gray16.max() > 200 and len(np.unique(gray16)) > 100  # rescaled from 16 bit, not clipped


def test_float_images_are_rescaled_to_their_range():
    image = Image.fromarray(np.linspace(-3.0, 7.0, 100, dtype=np.float32).reshape(10, 10), "F")
    values = np.asarray(to_rgb(image))[..., 0]
    assert values.min() == 0 and values.max() == 255


def _folder_with_bad_files(root):
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for k in range(4):
            _rgb().save(root / c / f"good{k}.png")
    good = _png_bytes(_rgb((64, 64)))
    (root / "cat" / "truncated.png").write_bytes(good[: len(good) // 2])
    jpeg = _png_bytes(_rgb((64, 64)), format="JPEG")
    (root / "dog" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "dog" / "notes.png").write_text("not an image at all\n")
    (root / "cat" / "random.jpg").write_bytes(RNG.integers(0, 255, 500, dtype=np.uint8).tobytes())
    return {"cat/truncated.png", "dog/truncated.jpg", "dog/notes.png", "cat/random.jpg"}


def _module(root, **kwargs):
    return LabeledImageDataModule(
        dataset="imagefolder", root=str(root), subset="all", image_size=16, **kwargs
    )


def test_broken_files_stop_the_run_with_one_error_listing_all_of_them(tmp_path):
    broken = _folder_with_bad_files(tmp_path)
    with pytest.raises(BadImageError) as info:
        _module(tmp_path).setup("fit")
    assert {name for name, _ in info.value.bad} == broken
    message = str(info.value)
    assert all(name in message for name in broken) and "on_bad_image: skip" in message


def test_skip_leaves_broken_files_out_with_the_same_list_as_a_warning(tmp_path, monkeypatch):
    broken = _folder_with_bad_files(tmp_path)
    module = _module(tmp_path, on_bad_image="skip")
    with pytest.warns(UserWarning, match="left out 4 image") as caught:
        module.setup("fit")
    assert all(name in str(caught[0].message) for name in broken)
    assert len(module.train_set) == 8
    # every good file was decoded exactly once, in setup; reading the set decodes nothing again
    data = module.train_set.data
    calls = []
    monkeypatch.setattr(data, "load", lambda i: calls.append(i) or load_rgb("/nonexistent"))
    items = [module.train_set[i] for i in range(len(module.train_set))]
    assert calls == [] and all(item["pixel_values"].shape == (3, 16, 16) for item in items)


def test_a_bad_choice_names_the_allowed_values(tmp_path):
    with pytest.raises(ValueError, match="on_bad_image must be one of"):
        _module(tmp_path, on_bad_image="ignore")


def test_broken_files_outside_the_drawn_subset_are_found_before_the_draw(tmp_path):
    """A 2-shot subset would not draw most files; the whole folder is checked anyway, once."""
    broken = _folder_with_bad_files(tmp_path)
    module = LabeledImageDataModule(dataset="imagefolder", root=str(tmp_path), subset="few_shot", shots=1,
                                    image_size=16, seed=0)  # fmt: skip
    with pytest.raises(BadImageError) as info:
        module.prepare_data()
    assert {name for name, _ in info.value.bad} == broken


def test_an_empty_class_and_broken_files_are_reported_together(tmp_path):
    broken = _folder_with_bad_files(tmp_path)
    (tmp_path / "eel").mkdir()
    (tmp_path / "eel" / "readme.txt").write_text("no images here\n")
    with pytest.raises(BadImageError) as info:
        _module(tmp_path).setup("fit")
    assert {name for name, _ in info.value.bad} == broken | {"eel/"}
    assert "class folder holds no image file" in str(info.value)
    with pytest.raises(BadImageError, match="eel/"):  # skipping broken files cannot fill an empty class
        _module(tmp_path, on_bad_image="skip").setup("fit")


def test_skip_draws_the_subset_from_the_readable_files_only(tmp_path):
    _folder_with_bad_files(tmp_path)
    module = LabeledImageDataModule(dataset="imagefolder", root=str(tmp_path), subset="few_shot", shots=4,
                                    image_size=16, seed=0, on_bad_image="skip")  # fmt: skip
    with pytest.warns(UserWarning, match="left out 4 image"):
        module.setup("fit")
    assert sorted(module.train_set.data.ids[i] for i in module.train_set.indices) == sorted(
        f"{c}/good{k}.png" for c in ("cat", "dog") for k in range(4)
    )


def test_a_cut_jpeg_is_found_by_the_cheap_check_and_a_padded_one_passes(tmp_path):
    from diffexpand.data.folder_check import file_problem

    jpeg = _png_bytes(_rgb((64, 64)), format="JPEG")
    (tmp_path / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (tmp_path / "padded.jpg").write_bytes(jpeg + b"\0" * 4096)  # valid, end marker far from the end
    (tmp_path / "ok.jpg").write_bytes(jpeg)
    assert file_problem(tmp_path / "cut.jpg") is not None
    assert file_problem(tmp_path / "padded.jpg") is None
    assert file_problem(tmp_path / "ok.jpg") is None
    assert file_problem(tmp_path / "missing.png") == "file not found"
