"""The synthetic-set manifest: `metadata.jsonl` in the Hugging Face `imagefolder` convention.

One JSON object per line, `file_name` (relative to the folder) first, then `label` and whatever the
method recorded. Images are written atomically before their line is appended, so a line always
points to a complete image; a torn last line (a crash mid-append) is ignored on reading. The set's
dataset card (README.md) gives `datasets` the columns' types, `label` as a ClassLabel.
"""

from __future__ import annotations

import copy
import errno
import io
import json
import os
import threading
import warnings
from pathlib import Path

from filelock import FileLock

from .redact import redact

MANIFEST_NAME = "metadata.jsonl"


class ManifestError(ValueError):
    """A set's metadata.jsonl that cannot be read as it is; the message names the file and the lines."""


def manifest_lines(path: Path) -> list[tuple[int, bytes]]:
    """(line number from 1, bytes) of each complete non-blank line of the manifest at `path`. A final
    line with no newline is left out: a torn append that the next append cuts (`repair_torn_tail`)."""
    lines = []
    with path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.endswith(b"\n"):
                break  # torn final line from an interrupted append
            if line.strip():
                lines.append((number, line))
    return lines


def parse_manifest_line(line: bytes) -> dict:
    """One manifest line as a record; ValueError saying what is wrong with it (no file, no line: the
    caller adds those)."""
    try:
        record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"not UTF-8 text (byte {err.start + 1})") from None
    except json.JSONDecodeError as err:  # (err.colno counts from the line end when the line is cut short)
        raise ValueError(f"not valid JSON ({err.msg} at column {err.pos + 1})") from None
    if not isinstance(record, dict):
        raise ValueError(f"not a JSON object but a {type(record).__name__}")
    return record


def read_manifest(folder: str | Path) -> list[dict]:
    """The records of a folder's manifest exactly as written ([] when there is none): for the writer of
    a set (resume, dataset card), which must see every line it wrote, a repeat included. Readers of a set
    made elsewhere use `set_reader.read_set`, which checks every record and reads a repeat once."""
    path = Path(folder) / MANIFEST_NAME
    if not path.exists():
        return []
    records = []
    for number, line in manifest_lines(path):
        try:
            records.append(parse_manifest_line(line))
        except ValueError as err:
            raise ManifestError(
                f"{path} line {number}: {err}; fix or delete that line, then run the command again"
            ) from None
    return records


def append_manifest(folder: str | Path, records: list[dict]) -> None:
    """Append records, each line complete and flushed to disk before returning. A file lock serialises
    writers (DDP ranks share one manifest): one rank's torn-tail repair must never cut another rank's
    line, and each append is one write call."""
    path = Path(folder) / MANIFEST_NAME
    with FileLock(str(path) + ".lock"):
        append_lines(path, records)


def append_lines(path: Path, records: list[dict]) -> None:
    """Append records to the JSON-lines file `path` in one write call, on disk before returning, after
    cutting a torn last line. No lock: for a file with one writer (`append_manifest` takes the lock)."""
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    repair_torn_tail(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:  # os.write may write less than asked (e.g. a signal): finish the line
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError as err:  # a torn last line is ignored on reading and cut by the next append
        raise _clear_disk_error(err, path, len(data)) from err
    finally:
        os.close(fd)


def repair_torn_tail(path: Path) -> None:
    """Cut a final line that has no newline (left by a crash), so appends start on a fresh line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as fh:
        data = fh.read()
        if data.endswith(b"\n"):
            return
        fh.truncate(data.rfind(b"\n") + 1)


def image_file_name(sample_id: str) -> str:
    """Where a set keeps the image of `sample_id`, relative to its folder (the manifest's file_name)."""
    return f"images/{sample_id}.png"


def png_bytes(array) -> bytes:
    """A (H, W, 3) uint8 array or tensor as PNG file bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array.numpy() if hasattr(array, "numpy") else array).save(buf, format="PNG")
    return buf.getvalue()


TEMPORARY_MARK = ".tmp"  # in the names of atomic_write_bytes' hidden temporary siblings


def atomic_write_bytes(path: str | Path, data: bytes | memoryview) -> None:
    """Write to a temporary sibling, fsync, then rename: readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TEMPORARY_MARK}{os.getpid()}-{threading.get_ident()}")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)  # never leave a partial file behind
        raise _clear_disk_error(err, path, len(data)) from err


def remove_stale_temporaries(folder: str | Path, older_than: float | None = None) -> list[Path]:
    """Delete the temporary siblings that killed writers left in `folder` (never partial files: those
    are only renamed when complete); the paths removed. `older_than` (a time.time() value) spares the
    files of writers still alive, e.g. other DDP ranks that started after it."""
    folder = Path(folder)
    stale = []
    for path in folder.glob(f".*{TEMPORARY_MARK}*") if folder.is_dir() else []:
        try:  # a live writer may rename its temporary between the listing and here
            if path.is_file() and (older_than is None or path.stat().st_mtime < older_than):
                path.unlink(missing_ok=True)
                stale.append(path)
        except FileNotFoundError:
            continue
    return stale


def _clear_disk_error(err: OSError, path: Path, size: int) -> OSError:
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return OSError(
            err.errno,
            f"no space left on the device while writing {path} ({size} bytes): "
            "free space there, then run the same command again to go on",
        )
    return err


SETTINGS_NAME = "run_settings.json"


def check_run_settings(folder: str | Path, settings: dict) -> None:
    """Record what made a synthetic set (method, its settings, model, data, seed) on the first run;
    refuse to continue a set made with other settings — resuming would silently mix two sets. Counts
    (images per class, expansion ratio) are not part of it: growing a set is allowed."""
    folder = Path(folder)
    path = folder / SETTINGS_NAME
    settings = redact(json.loads(json.dumps(settings, sort_keys=True, default=str)))
    if path.exists():
        before = json.loads(path.read_text())
        if before != settings:
            changed = sorted(k for k in before.keys() | settings.keys() if before.get(k) != settings.get(k))
            raise ValueError(
                f"{folder} holds a synthetic set made with other settings ({', '.join(changed)} differ); "
                "write this run to another --output_dir, or delete the folder to start over"
            )
        return
    atomic_write_bytes(path, (json.dumps(settings, indent=1, sort_keys=True) + "\n").encode())


# ---- the dataset card ----------------------------------------------------------------------------
CARD_NAME = "README.md"
CARD_MARK = "<!-- diffexpand synthetic-set card: rewritten at the end of every run into this folder -->"
CARD_DATA_FILES = [{"split": "train", "path": [MANIFEST_NAME, "images/*.png"]}]


def class_names_of(records: list[dict]) -> list[str] | None:
    """Class names in label order, from the records' `label` / `class_name`; None when they cannot name
    a ClassLabel (a label with no image, a label with two names, two labels with one name)."""
    names: dict[int, str] = {}
    for r in records:
        label, name = r.get("label"), r.get("class_name")
        if type(label) is not int or not isinstance(name, str) or names.setdefault(label, name) != name:
            return None
    ordered = [names.get(i) for i in range(len(names))]
    if None in ordered or len(set(ordered)) != len(ordered):
        return None
    return ordered


def set_features(records: list[dict]):
    """The `datasets.Features` of a set as the imagefolder builder reads metadata.jsonl: its own type
    inference (pyarrow's JSON reader over every line, so a key that only some methods or records write, or
    an integer in one line and a float in another, is typed from all of them), `file_name` as the image,
    and `label` as a ClassLabel of the class names when they are known."""
    import datasets
    import pyarrow.json as paj

    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    options = paj.ReadOptions(block_size=max(len(data), 1 << 20))  # one block: one inference over all
    inferred = datasets.Features.from_arrow_schema(
        paj.read_json(io.BytesIO(data), read_options=options).schema
    )
    names = class_names_of(records)
    features = {}
    for key, feature in inferred.items():
        if key == "file_name":
            features["image"] = datasets.Image()
        elif key == "label" and names is not None:
            features["label"] = datasets.ClassLabel(names=names)
        else:
            features[key] = feature
    return datasets.Features(features)


def write_dataset_card(folder: str | Path) -> Path | None:
    """Write the set's dataset card (README.md) from the records in metadata.jsonl, atomically: column
    types for `datasets`, with `label` a ClassLabel of the class names, so `datasets.load_dataset(folder)`
    gives them. (`load_dataset("imagefolder", data_dir=folder)` reads the same files but, in datasets
    5.x, never looks for a card: its labels stay integers.) A README.md this function did not write is
    left alone. Returns the card's path, or None when nothing was written."""
    from datasets.info import DatasetInfo, DatasetInfosDict
    from huggingface_hub import DatasetCardData

    folder = Path(folder)
    path = folder / CARD_NAME
    records = read_manifest(folder)
    if not records:
        return None
    if path.exists() and CARD_MARK not in path.read_text(encoding="utf-8", errors="replace"):
        message = f"{path} was not written by diffexpand: left as it is, without the set's column types"
        warnings.warn(message, stacklevel=2)
        return None
    try:
        features = set_features(records)
    except ValueError as err:  # e.g. a key that is a number in one line and text in another
        path.unlink(missing_ok=True)  # a card that no longer describes the set would drop columns
        message = f"no dataset card for {folder}: its metadata has no consistent column types ({err})"
        warnings.warn(message, stacklevel=2)
        return None
    card = DatasetCardData(task_categories=["image-classification"], tags=["synthetic", "diffexpand"])
    DatasetInfosDict({"default": DatasetInfo(features=features)}).to_dataset_card_data(card)
    # the builder takes its features from the config (a `dataset_info` alone is replaced by what it infers)
    card["configs"] = [
        {
            "config_name": "default",
            "data_files": CARD_DATA_FILES,
            "features": copy.deepcopy(card["dataset_info"]["features"]),  # no YAML anchors
        }
    ]
    text = f"---\n{card.to_yaml()}\n---\n{CARD_MARK}\n\n{_card_body(records, features)}"
    atomic_write_bytes(path, text.encode("utf-8"))
    return path


def _card_body(records: list[dict], features) -> str:
    methods = sorted({str(r.get("method")) for r in records if r.get("method") is not None})
    label = features.get("label")
    names = getattr(label, "names", None)
    counts: dict = {}
    for r in records:
        counts[r.get("label")] = counts.get(r.get("label"), 0) + 1
    lines = [
        "# Synthetic set",
        "",
        f"{len(records)} images made by diffexpand ({', '.join(methods) or 'unknown method'}). "
        "`metadata.jsonl` has one line per image: `file_name`, `label`, then what the method recorded; "
        "this card gives every column's type"
        + (", with `label` a ClassLabel of the class names." if names else "."),
        "",
        "```python",
        "import datasets",
        "",
        'ds = datasets.load_dataset("path/to/this/folder", split="train")  # reads this card',
        "```",
        "",
        '`datasets.load_dataset("imagefolder", data_dir=...)` reads the same images and metadata but not '
        "this card, so `label` comes as plain integers there.",
        "",
    ]
    if names:
        lines += ["| label | class | images |", "| --- | --- | --- |"]
        for i, name in enumerate(names):
            cell = " ".join(name.split()).replace("|", "\\|")  # names are data: keep the table whole
            lines.append(f"| {i} | {cell} | {counts.get(i, 0)} |")
    return "\n".join(lines) + "\n"
