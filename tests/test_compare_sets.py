"""tools/compare_synthetic_sets.py: equal sets pass, a moved pixel or a changed line fails."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from tools.compare_synthetic_sets import compare, main


def _set(folder, shift=0, label=0):
    (folder / "images").mkdir(parents=True)
    lines = []
    for i in range(3):
        pixels = np.full((8, 8, 3), 100 + i, dtype=np.uint8)
        pixels[0, 0] += shift if i == 2 else 0
        Image.fromarray(pixels).save(folder / f"images/r{i}.png")
        lines.append({"file_name": f"images/r{i}.png", "label": label, "id": f"r{i}", "seed": i})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


def test_equal_sets_pass_and_differences_are_counted(tmp_path):
    a = _set(tmp_path / "a")
    shutil.copytree(a, tmp_path / "same")
    assert main([str(a), str(tmp_path / "same")]) == 0
    assert compare(a, tmp_path / "same")["identical_files"] == 3
    moved = _set(tmp_path / "moved", shift=3)
    assert compare(a, moved)["max_level_difference"] == 3
    assert main([str(a), str(moved)]) == 1 and main([str(a), str(moved), "--tolerance", "3"]) == 0
    relabelled = _set(tmp_path / "relabelled", label=1)
    assert compare(a, relabelled)["differing_lines"] == ["r0", "r1", "r2"]
    assert main([str(a), str(relabelled)]) == 1


def test_a_folder_without_records_or_images_of_another_size_is_an_error_not_a_verdict(tmp_path):
    a = _set(tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="holds no metadata.jsonl records"):
        compare(a, tmp_path / "mistyped")  # would be "0 records in both": the same
    resized = _set(tmp_path / "resized")
    Image.new("RGB", (16, 16)).save(resized / "images/r1.png")
    with pytest.raises(ValueError, match="record 'r1': the images differ in size"):
        compare(a, resized)
