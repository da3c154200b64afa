"""Reading a synthetic set as untrusted input: every line of its metadata.jsonl checked once, before use.

A set may come from anywhere (another machine, a colleague, a hand-edited file), and its `file_name`s
are opened and trained on. `read_set` resolves each one inside the set folder (symlinks followed) and
refuses any that leads out of it, checks every record's keys and types, reads an exact repeat of a
line once and refuses two different lines with one id or one image. Every fault is reported in one
`ManifestError`, with its line, so a set is fixed in one pass and never fails halfway through training.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .manifest import MANIFEST_NAME, ManifestError, manifest_lines, parse_manifest_line

MAX_LISTED = 20  # faulty lines named in one error; the rest are counted
MAX_VALUE_CHARS = 300  # a value is shown cut to this: a hostile line may hold megabytes


@dataclass(frozen=True)
class CheckedSet:
    """The records of a set, each with the image it names (resolved, inside the folder, a regular
    file) and its line in metadata.jsonl. Open images through `paths`, never `folder / file_name`."""

    folder: Path
    records: list[dict] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def image(self, i: int):
        """Record i's image as every reader of a set sees it (`decode_set_image`); one that does not
        decode is an error naming its line in metadata.jsonl."""
        from PIL import Image

        from .data.images import reason_of

        try:
            return decode_set_image(self.paths[i])
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            where = f"{self.folder / MANIFEST_NAME} line {self.lines[i]} ({self.records[i]['file_name']})"
            raise ManifestError(f"{where}: {reason_of(err)}") from None


def decode_set_image(path: Path):
    """A synthetic image, fully decoded, in RGB (PIL's conversion): the pixels the classifier trains on,
    which the set metrics and the compare tool must see too."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()  # decode everything now: a truncated file fails here
        return image.convert("RGB")


def read_set(folder: str | Path, num_classes: int | None = None) -> CheckedSet:
    """The checked records of the set in `folder` (empty when it has no metadata.jsonl). With
    `num_classes`, labels and soft labels are checked against it too. Raises ManifestError listing
    every faulty line; warns of exact repeats (read once) and of a final line cut short."""
    folder = Path(folder)
    manifest = folder / MANIFEST_NAME
    if not manifest.is_file():
        return CheckedSet(folder)
    checked, seen = CheckedSet(folder), _Seen(folder.resolve())
    problems: list[str] = []
    repeats: list[tuple[int, int]] = []
    for number, line in manifest_lines(manifest):
        try:
            record = parse_manifest_line(line)
        except ValueError as err:
            text = line.decode("utf-8", errors="replace").strip()
            problems.append(f"{MANIFEST_NAME} line {number}: {err} ({_shown(text)})")
            continue
        content = json.dumps(record, sort_keys=True)
        if content in seen.content:
            repeats.append((number, seen.content[content]))
            continue
        seen.content[content] = number
        path, faults = _check_record(record, number, num_classes, seen)
        if faults:
            problems.append(f"{MANIFEST_NAME} line {number}: " + "; ".join(faults))
        else:
            checked.records.append(record)
            checked.paths.append(path)
            checked.lines.append(number)
    if problems:
        raise ManifestError(_report(folder, problems))
    _warn_of_repeats(folder, repeats)
    _warn_of_a_torn_tail(folder, manifest)
    return checked


def read_nonempty_set(folder: str | Path, num_classes: int | None = None) -> CheckedSet:
    """`read_set` for a reader that needs images: a folder with no records (a mistyped path, a set not
    yet written) is an error, never an empty set that trains, compares or scores as nothing."""
    checked = read_set(folder, num_classes)
    if not checked.records:
        raise FileNotFoundError(
            f"synthetic set {folder} holds no {MANIFEST_NAME} records; make it with "
            "`python expand.py predict --config configs/expand/<method>.yaml --output_dir DIR`"
        )
    return checked


@dataclass
class _Seen:
    """What earlier lines hold, by the first line that holds it."""

    root: Path  # the set folder, resolved
    content: dict[str, int] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)
    images: dict[Path, int] = field(default_factory=dict)


def _check_record(record: dict, number: int, num_classes: int | None, seen: _Seen):
    """(the record's image, its faults): the image is None when there is a fault."""
    faults: list[str] = []
    path = _image_path(record, seen.root, faults)
    faults += _label_faults(record, num_classes)
    faults += _other_faults(record, num_classes)
    faults += _duplicate_faults(record, path, number, seen)
    return (None if faults else path), faults


def _shown(value) -> str:
    """`value` as the user sees it in a message: repr (control characters escaped), cut short."""
    text = repr(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 3] + "..."


def _image_path(record: dict, root: Path, faults: list[str]) -> Path | None:
    """The resolved image of `record`, or None with the reason added to `faults`."""
    if "file_name" not in record:
        faults.append("no 'file_name' (the image's path, relative to the set folder)")
        return None
    name = record["file_name"]
    if not isinstance(name, str) or not name.strip() or "\0" in name:
        faults.append(f"file_name must be a path relative to the set folder ({_shown(name)})")
        return None
    path, fault = _resolve_inside(name, root)
    if fault is not None:
        faults.append(f"{fault} ({_shown(name)})")
    return path


def _resolve_inside(name: str, root: Path) -> tuple[Path | None, str | None]:
    """(where `name` really is, None), or (None, why it cannot be read from the set folder `root`)."""
    leaves = "file_name leads outside the set folder"
    if Path(name).is_absolute():
        return None, f"{leaves}: absolute paths are not allowed, give it relative to the folder"
    if ".." in Path(name).parts:
        return None, f"{leaves}: '..' is not allowed"
    try:
        path = (root / name).resolve()  # symlinks followed: where the file really is
    except (OSError, RuntimeError) as err:  # a symlink loop
        return None, f"file_name cannot be resolved: {err}"
    if not path.is_relative_to(root):
        return None, f"{leaves}: it resolves to {_shown(str(path))}"
    if not path.is_file():
        return None, f"file_name: {'not a regular file' if path.exists() else 'no such image file'}"
    return path, None


def _label_faults(record: dict, num_classes: int | None) -> list[str]:
    if "label" not in record:
        return ["no 'label' (the class number, from 0)"]
    label = record["label"]
    if type(label) is not int:  # bool is an int subclass, and "3" or 3.0 are no class numbers either
        return [f"label must be a whole number, not {type(label).__name__} ({_shown(label)})"]
    if label < 0 or (num_classes is not None and label >= num_classes):
        classes = f"0 to {num_classes - 1}" if num_classes is not None else "from 0"
        return [f"label is not a class of this dataset ({classes}) ({_shown(label)})"]
    return []


def _other_faults(record: dict, num_classes: int | None) -> list[str]:
    faults = []
    if "id" in record and (not isinstance(record["id"], str) or not record["id"]):
        faults.append(f"id must be a non-empty string ({_shown(record['id'])})")
    if "class_name" in record and not isinstance(record["class_name"], str):
        faults.append(f"class_name must be a string ({_shown(record['class_name'])})")
    soft = record.get("soft_label")
    if soft is not None and not _is_soft_label(soft, num_classes):
        size = f"{num_classes} " if num_classes is not None else ""
        faults.append(f"soft_label must be a list of {size}numbers with a positive sum ({_shown(soft)})")
    return faults


def _is_soft_label(soft, num_classes: int | None) -> bool:
    if not isinstance(soft, list) or (num_classes is not None and len(soft) != num_classes):
        return False
    if not all(type(v) in (int, float) and math.isfinite(v) for v in soft):
        return False
    return sum(max(v, 0) for v in soft) > 0  # what the classifier's target normalises by


def _duplicate_faults(record: dict, path: Path | None, number: int, seen: _Seen) -> list[str]:
    """Two different lines for one id, or two records of one image file: either would count twice."""
    sample_id = record.get("id")
    if isinstance(sample_id, str):
        if sample_id in seen.ids:
            return [f"id {_shown(sample_id)} is already on line {seen.ids[sample_id]} with other values"]
        seen.ids[sample_id] = number
    if path is not None:
        if path in seen.images:
            name = _shown(record["file_name"])
            return [f"file_name {name} is already the image of line {seen.images[path]}"]
        seen.images[path] = number
    return []


def _report(folder: Path, problems: list[str]) -> str:
    fix = "fix or delete {}, or write the set again (`python expand.py predict --output_dir DIR`)"
    if len(problems) == 1:
        return f"synthetic set {folder}: {problems[0]}; {fix.format('that line')}"
    listed = [f"  {p}" for p in problems[:MAX_LISTED]]
    if len(problems) > MAX_LISTED:
        listed.append(f"  ... and {len(problems) - MAX_LISTED} more")
    head = f"synthetic set {folder}: {len(problems)} faulty lines in {MANIFEST_NAME}, nothing was read:"
    return "\n".join([head, *listed, fix.format("those lines")])


def _warn_of_repeats(folder: Path, repeats: list[tuple[int, int]]) -> None:
    if not repeats:
        return
    named = ", ".join(f"line {n} repeats line {first}" for n, first in repeats[:MAX_LISTED])
    more = f" and {len(repeats) - MAX_LISTED} more" if len(repeats) > MAX_LISTED else ""
    message = f"synthetic set {folder}: {named}{more} exactly in {MANIFEST_NAME}; each image is read once"
    warnings.warn(message, stacklevel=3)


def _warn_of_a_torn_tail(folder: Path, manifest: Path) -> None:
    """A last line with no line end is left out (an interrupted write): say so, as a set written by hand
    without a final newline would otherwise lose its last image unnoticed."""
    with manifest.open("rb") as fh:
        size = fh.seek(0, 2)
        fh.seek(max(0, size - 4096))
        tail = fh.read()
    if not tail or tail.endswith(b"\n") or not tail.rsplit(b"\n", 1)[-1].strip():
        return
    message = (
        f"synthetic set {folder}: the last line of {MANIFEST_NAME} has no line end and is left out (an "
        "interrupted write); end it with a newline if it is a complete record"
    )
    warnings.warn(message, stacklevel=3)
