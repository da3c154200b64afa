import json

from diffexpand.manifest import MANIFEST_NAME, append_manifest, atomic_write_bytes, read_manifest


def test_append_and_read_round_trip(tmp_path):
    append_manifest(tmp_path, [{"file_name": "a.png", "label": 0}])
    append_manifest(tmp_path, [{"file_name": "b.png", "label": 1, "class_name": "Ankle boot"}])
    assert [r["file_name"] for r in read_manifest(tmp_path)] == ["a.png", "b.png"]


def test_torn_last_line_is_ignored_then_repaired(tmp_path):
    append_manifest(tmp_path, [{"file_name": "a.png", "label": 0}])
    with (tmp_path / MANIFEST_NAME).open("a") as fh:
        fh.write('{"file_name": "b.pn')  # a crash in the middle of an append
    assert [r["file_name"] for r in read_manifest(tmp_path)] == ["a.png"]
    append_manifest(tmp_path, [{"file_name": "c.png", "label": 2}])
    lines = (tmp_path / MANIFEST_NAME).read_text().splitlines()
    assert [json.loads(line)["file_name"] for line in lines] == ["a.png", "c.png"]


def test_atomic_write_leaves_no_temporary_file(tmp_path):
    atomic_write_bytes(tmp_path / "images" / "x.png", b"data")
    assert (tmp_path / "images" / "x.png").read_bytes() == b"data"
    assert [p.name for p in (tmp_path / "images").iterdir()] == ["x.png"]


def test_synthetic_set_reads_with_hf_imagefolder(tmp_path):
    """The folder convention is Hugging Face's: datasets.load_dataset('imagefolder') reads it."""
    import datasets
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (8, 8), (i * 50, 0, 0)).save(tmp_path / f"{i}.png")
    append_manifest(tmp_path, [{"file_name": f"{i}.png", "label": i % 2, "seed": i} for i in range(3)])
    ds = datasets.load_dataset("imagefolder", data_dir=str(tmp_path), split="train")
    assert sorted(ds["seed"]) == [0, 1, 2] and ds[0]["image"].size == (8, 8)
