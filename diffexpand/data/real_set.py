"""Real training images written as a set folder, in the format of a synthetic set.

The benchmark's "Real xN" ceiling row trains the classifier on real images that a method's synthetic
images would stand in for; written as a set (images/<id>.png + metadata.jsonl + dataset card +
preview.png, at the size the expanders write), they go through exactly the classifier path and mixing a
synthetic set goes through. Images are made as every stage sees a real image (`image_to_tensor`:
bicubic resize, centre crop) and stored as 8-bit RGB PNGs, as the expander stores its images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffexpand.manifest import (
    append_manifest,
    atomic_write_bytes,
    check_run_settings,
    image_file_name,
    png_bytes,
    read_manifest,
    write_dataset_card,
)

from .images import image_to_tensor
from .readers import LabeledImages

REAL_SET_METHOD = "real"  # the `method` of every record: these images were not generated


def real_set_records(data: LabeledImages, indices, subset_seed: int) -> list[tuple[int, dict]]:
    """(training index, manifest line) per image, in class order and numbered per class as the expander
    numbers its records (c<label>_<k>); `source_ids` names the training image each one is."""
    indices = np.asarray(indices, dtype=np.int64)
    values, counts = np.unique(indices, return_counts=True)
    if (counts > 1).any():  # one image twice would weigh double in training
        raise ValueError(f"a real set lists each image once; indices {values[counts > 1].tolist()} repeat")
    ordered = indices[np.lexsort((indices, data.labels[indices]))]  # by class, then by index
    records, per_class = [], {}
    for j in ordered:
        label = int(data.labels[j])
        k = per_class[label] = per_class.get(label, -1) + 1
        sample_id = f"c{label:04d}_{k:05d}"
        line = {
            "file_name": image_file_name(sample_id),
            "label": label,
            "id": sample_id,
            "class_name": data.class_names[label],
            "method": REAL_SET_METHOD,
            "subset_seed": int(subset_seed),
            "source_ids": [data.ids[int(j)]],
        }
        records.append((int(j), line))
    return records


def write_real_set(
    folder: str | Path, data: LabeledImages, indices, image_size: int, subset_seed: int
) -> Path:
    """Write the training images at `indices` of `data` into `folder` as a set; a rerun writes only what
    the manifest lacks, and a folder holding another set (other images, size or seed) is refused."""
    from diffexpand.models.vae import to_uint8
    from diffexpand.preview import contact_sheet

    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a whole number of pixels >= 1, got {image_size!r}")
    folder = Path(folder)
    records = real_set_records(data, indices, subset_seed)
    settings = {
        "method": REAL_SET_METHOD,
        "dataset": data.name,
        "image_size": image_size,
        "subset_seed": int(subset_seed),
        "source_ids": [r["source_ids"][0] for _, r in records],
    }
    check_run_settings(folder, settings)  # never mix two sets in one folder
    done = {r["id"] for r in read_manifest(folder)}
    todo = [(j, r) for j, r in records if r["id"] not in done]
    for j, record in todo:
        pixels = to_uint8(image_to_tensor(data.image(int(j)), image_size)[None])[0]
        atomic_write_bytes(folder / record["file_name"], png_bytes(pixels))
    if todo:  # images first, then their lines: a line always points to a complete image
        append_manifest(folder, [r for _, r in todo])
    write_dataset_card(folder)
    sheet = contact_sheet(folder, label_rows=True)
    if sheet is not None:
        sheet.save(folder / "preview.png")
    return folder
