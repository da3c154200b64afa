"""The tiny benchmark's stage records: what a finished stage (concepts, a set, a classifier run) was made
from — its extra settings, a digest of the files it read, the fingerprint of the prior it loaded — and
the check that lets a rerun into the same --out reuse it only when all of them still hold."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from benchmarks.bench_protocol import model_section, say

CONFIG_SUFFIXES = (".yaml", ".yml")


# A config's meaning is used only when it is small plain data; anything else (aliases expanded into a huge
# tree, a nesting deep enough to exhaust the stack) counts by its bytes instead.
MAX_CONFIG_NODES = 100_000
MAX_CONFIG_DEPTH = 64


def config_meaning(data: bytes) -> bytes | None:
    """A config file's content as the CLI reads it (jsonargparse's YAML loader), serialised: the same for two
    files that differ only in comments or layout, or that write the same number or string two ways the
    loader reads alike (`1e-3` and `0.001`); key order still counts. None for a file that is not such a
    config (not UTF-8 text, not YAML, or not plain data: a key that is not a string, a tagged value such as
    a date, a set or bytes, an alias-expanded or very deep tree): it then counts by its bytes. (After an
    upgrade that changes jsonargparse's loader, a config may read differently and its stages be refused.)"""
    from jsonargparse import get_loader

    try:
        value = get_loader("yaml")(data.decode())
    except Exception:  # whatever the loader raises (a bad tag's value, a deep nest): not a config
        return None
    if not _plain_data(value):
        return None
    return json.dumps(value).encode()


def _plain_data(value) -> bool:
    """Whether a loaded value is JSON data (string keys; lists, strings, numbers, booleans, None), of at
    most MAX_CONFIG_NODES nodes and MAX_CONFIG_DEPTH levels, so that it serialises to one text."""
    stack, nodes = [(value, 0)], 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > MAX_CONFIG_NODES or depth > MAX_CONFIG_DEPTH:
            return False
        if isinstance(item, dict):
            if not all(isinstance(key, str) for key in item):
                return False
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        elif item is not None and not isinstance(item, str | int | float):  # bool is an int
            return False
    return True


def _digest(paths: tuple[Path, ...], by_meaning: bool) -> str:
    digest = hashlib.sha256()
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if path.is_dir() and not file.resolve().is_relative_to(path.resolve()):
                raise ValueError(f"{file} links outside {path}: a stage reads only what its folder holds")
            name = file.relative_to(path) if path.is_dir() else file.name
            content = b"absent"
            if file.is_file():
                data = file.read_bytes()
                meaning = config_meaning(data) if by_meaning and file.suffix in CONFIG_SUFFIXES else None
                content = hashlib.sha256(data if meaning is None else b"config\0" + meaning).digest()
            digest.update(f"{name}\0".encode() + content)
    return digest.hexdigest()[:16]


class InputsDigest(str):
    """The digest `inputs_digest` returns: a plain string in a record, which also knows its files, so that
    `reused` can check a record written before config files counted by their meaning against the byte
    digest of the same files (`by_bytes`)."""

    paths: tuple[Path, ...]

    def __new__(cls, paths: tuple[Path, ...]) -> InputsDigest:
        digest = super().__new__(cls, _digest(paths, by_meaning=True))
        digest.paths = paths
        return digest

    def by_bytes(self) -> str:
        """The digest of the same files with every file counted by its bytes (records before the change)."""
        return _digest(self.paths, by_meaning=False)

    def __reduce__(self):  # a copy or a pickle is the plain digest: it does not need the files again
        return (str, (str(self),))


def inputs_digest(*paths: Path) -> InputsDigest:
    """A digest of the files a stage reads (config files, a concept folder, a set's images), so a stage
    made from other versions of them is not taken for this one. A folder counts with every file in it
    (by relative name and content); a path that does not exist counts as absent. A YAML config counts by
    what the CLI reads in it (`config_meaning`), so editing a comment keeps the stages made from it; every
    other file by its bytes. A link inside a folder that leads out of it is refused: the digest reads
    only what the folder holds."""
    return InputsDigest(paths)


def set_inputs(folder: Path) -> list[Path]:
    """What a classifier reads of a set: its records and images (not the figures written beside them).
    The images are the `images/` folder the writer fills, plus any image a record names elsewhere inside
    the set folder (the set reader accepts those), so changing one of them changes the digest too."""
    from diffexpand.set_reader import read_set

    images = folder / "images"
    inside = images.resolve()
    elsewhere = sorted({p for p in read_set(folder).paths if not p.resolve().is_relative_to(inside)})
    return [folder / "metadata.jsonl", images, *elsewhere]


# What a record keeps besides its extra settings, each added later than the one before: a record made
# before a key existed lacks it and is reused unchecked on that point, with a note.
DIGESTS = {"inputs": "a digest of their input files", "prior": "the fingerprint of the prior they loaded"}


REMAKE = "delete it to remake that stage"  # what to do about a record that is not one


def write_record(path: Path, record: dict) -> None:
    """A stage's record, written whole or not at all: a run killed while writing it leaves no torn file
    that the next run would take for the stage's result."""
    from diffexpand.manifest import atomic_write_bytes

    atomic_write_bytes(path, (json.dumps(record, indent=1) + "\n").encode())


def read_record(path: Path, *keys: str) -> dict:
    """A stage's record (a JSON object with these keys), or an error that names the file and what to do."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        problem = f"not readable JSON ({err})"
    else:
        if not isinstance(record, dict):
            problem = "not a JSON object"
        elif missing := [key for key in keys if key not in record]:
            problem = f"lacks {', '.join(missing)}"
        else:
            return record
    raise ValueError(f"{path}: {problem}; {REMAKE}")


def recorded_accuracy(record: Path, done: dict, key: str) -> float:
    """The accuracy a classifier record keeps under metrics[key], checked to be one (a number in [0, 1])."""
    metrics = done.get("metrics")
    value = metrics.get(key) if isinstance(metrics, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{record}: metrics[{key!r}] is {value!r}, not an accuracy in [0, 1]; {REMAKE}")
    return float(value)


def _without(settings: dict, keys) -> dict:
    return {k: v for k, v in settings.items() if k not in keys}


def reused(record: Path, settings: dict, *required: str) -> dict:
    """A finished stage's record, if it was made with these extra settings, from the same input files and
    on the same prior. Stages are found by name, so a rerun into the same --out with other
    --concept-args / --expand-args / --classifier-args, or after a config file, the concepts, a set or
    the prior changed, would otherwise report the old concepts, set or accuracy as the new one's. (A
    record without settings predates them; one without a digest key predates that key: each taken as
    far as it goes, the latter with a note.) `required`: the keys the record must have."""
    done = read_record(record, *required)
    made = done.get("settings", settings)
    if not isinstance(made, dict):
        raise ValueError(f"{record}: its settings are {made!r}, not an object; {REMAKE}")
    if "settings" not in done:
        say(f"reusing {record}, made before stages kept their settings: not checked against them")
    unchecked = [key for key in DIGESTS if key in settings and key not in made]
    wanted = _without(settings, unchecked)
    if made != wanted and _made_by_byte_digest(made, wanted):
        say(f"reusing {record}, whose digest counted config files by their bytes: they are unchanged; the "
            "record now counts them by their meaning")  # fmt: skip
        done = {**done, "settings": {**made, "inputs": str(wanted["inputs"])}}
        made = done["settings"]
        try:
            write_record(record, done)
        except OSError as err:  # a read-only --out: the record holds, it is only not updated
            say(f"could not update {record} ({err}): it is reused as it is")
    if made != wanted:
        what = "other input files (a config, the concepts or a set changed since)"
        if made.get("prior") != wanted.get("prior"):
            what = f"another prior ({made.get('prior')}, now {wanted.get('prior')})"
        if _without(made, DIGESTS) != _without(wanted, DIGESTS):
            what = f"other settings ({_without(made, DIGESTS)}, now {_without(wanted, DIGESTS)})"
        raise ValueError(
            f"{record} was made with {what}: give this run another --out, or delete that stage to remake it"
        )
    if unchecked:
        kept = " or ".join(DIGESTS[key] for key in unchecked)
        say(f"reusing {record}, made before stages kept {kept}: not checked against them")
    return done


def _made_by_byte_digest(made: dict, wanted: dict) -> bool:
    """Whether a record differs from these settings only in its input digest, and that digest is the one
    records kept before config files counted by their meaning, of the same files as now."""
    inputs = wanted.get("inputs")
    return (
        isinstance(inputs, InputsDigest)
        and _without(made, ["inputs"]) == _without(wanted, ["inputs"])
        and made.get("inputs") == inputs.by_bytes()
    )


PRIOR_FLAGS = ("--model.init_args.pretrained", "--model.pretrained")


def prior_of(config: Path, extra: list[str]) -> str:
    """The prior a concept or expansion run loads: the last pretrained setting among its extra arguments
    (as jsonargparse takes the last), else its config's, else the default prior."""
    from diffexpand.paths import DEFAULT_PRIOR

    for i in reversed(range(len(extra))):
        flag, given, value = extra[i].partition("=")
        if flag in PRIOR_FLAGS and (given or i + 1 < len(extra)):
            return value if given else extra[i + 1]
    model, init_args = model_section(config)
    return str(init_args.get("pretrained") or model.get("pretrained") or DEFAULT_PRIOR)


def prior_fingerprint(config: Path, extra: list[str]) -> str:
    """The content fingerprint of that prior (its configs, tokenizer and weights), so concepts and sets
    made on an earlier prior (before `make prior` rewrote it, say) are not taken for this one's."""
    from diffexpand.models.identity import model_identity
    from diffexpand.paths import in_repo

    source = prior_of(config, extra)
    identity = model_identity(in_repo(source) or source)
    return identity.fingerprint if identity else f"not on this machine: {source}"
