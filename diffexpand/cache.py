"""Heavy intermediate results (VAE latents, inversion pools) cached on disk as safetensors.

The file name is a hash of everything the result depends on, so a change of model, data, concept folder
or settings gives a new entry and a sweep over anything else reuses it. A file lock makes concurrent
processes (DDP ranks, parallel sweep runs) build each entry once; writes are atomic (a full disk leaves
no partial file and says so), and an entry holding NaN or Inf is never written.

An entry found on disk is never trusted: it must read, hold exactly the expected keys and shapes (the
caller says what it expects), and be finite. One that is not (a truncated copy, a file from another
tool, a disk error) is named in one warning and built again under the lock.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import torch
from filelock import FileLock
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from diffexpand.manifest import atomic_write_bytes

log = logging.getLogger(__name__)

T = TypeVar("T")

Shape = tuple[int | None, ...]
"""The shape a cached tensor must have; None on an axis whose size is free (e.g. a feature width)."""

Check = Callable[[T], str | None]
"""What is wrong with a value read from the cache (e.g. "holds 3 items"), or None when it is usable."""

Read = Callable[[Path], tuple[T, str | None]]
"""A reader of one kind of entry: its value, or why the file cannot be read."""

WHAT_TO_DO_WITH_THE_FOLDER = "make the cache folder writable, or set data.init_args.cache_dir to one that is"


def cache_key(**depends_on) -> str:
    blob = json.dumps(depends_on, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def folder_fingerprint(folder: str | Path) -> str:
    """Content hash of a folder's files (names, sizes, and bytes of files under 64 MB; mtime for larger)."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.relative_to(folder)}:{stat.st_size}".encode())
            digest.update(path.read_bytes() if stat.st_size < 64 * 2**20 else str(stat.st_mtime_ns).encode())
    return digest.hexdigest()[:20]


# ---- what a usable entry looks like ---------------------------------------------------------------


def _shape_text(shape: Shape) -> str:
    return "(" + ", ".join("*" if n is None else str(n) for n in shape) + ")"


def _fits(shape: tuple[int, ...], expected: Shape) -> bool:
    return len(shape) == len(expected) and all(
        e is None or n == e for n, e in zip(shape, expected, strict=True)
    )


def non_finite_keys(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    return [k for k, v in tensors.items() if v.is_floating_point() and not bool(v.isfinite().all())]


def tensors_problem(tensors: Mapping[str, torch.Tensor], expect: Mapping[str, Shape] | None) -> str | None:
    """What makes `tensors` unusable as an entry expected to hold `expect` ({key: shape}; None: any keys
    and shapes), or None. Floating tensors must be finite whatever is expected."""
    if expect is not None:
        missing, extra = sorted(set(expect) - set(tensors)), sorted(set(tensors) - set(expect))
        if missing:
            return f"key {missing[0]!r} missing" if len(missing) == 1 else f"keys {missing} missing"
        if extra:
            return f"unexpected key(s) {extra}"
        for name, expected in expect.items():
            shape = tuple(tensors[name].shape)
            if not _fits(shape, expected):
                return f"{name!r} has shape {_shape_text(shape)}, expected {_shape_text(expected)}"
    bad = non_finite_keys(tensors)
    if bad:
        return f"{bad} hold NaN or Inf"
    return None


def strings(at_most: int) -> Check[object]:
    """Expect a list of 1 to `at_most` non-empty strings (e.g. generated suffixes)."""

    def problem(value: object) -> str | None:
        if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
            return "not a list of non-empty strings"
        if not 1 <= len(value) <= at_most:
            return f"holds {len(value)} strings, expected 1 to {at_most}"
        return None

    return problem


# ---- reading and writing entries ------------------------------------------------------------------


def _read_tensors(path: Path) -> tuple[dict[str, torch.Tensor] | None, str | None]:
    try:
        return load_file(path), None
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:  # truncated, empty, garbage
        return None, f"unreadable: truncated or not a safetensors file ({err})"


def _read_json(path: Path) -> tuple[object, str | None]:
    try:  # bytes: a file that is not UTF-8 is a ValueError here too
        return json.loads(path.read_bytes()), None
    except (OSError, ValueError) as err:
        return None, f"unreadable: truncated or not a JSON file ({err})"


def _checked(path: Path, read: Read[T], check: Check[T]) -> tuple[T, str | None]:
    value, problem = read(path)
    return value, problem if problem is not None else check(value)


def _folder_error(err: OSError, what: str) -> OSError:
    return OSError(err.errno, f"cannot {what} ({err.strerror or err}): {WHAT_TO_DO_WITH_THE_FOLDER}")


def _built_wrong(path: Path, problem: str) -> ValueError:
    """The builder and its caller's expectation disagree: a bug, not the user's doing."""
    return ValueError(
        f"cache {path.name}: the entry just built {problem}; nothing was cached (a bug: report it)"
    )


def _write(path: Path, data: bytes) -> None:
    try:
        atomic_write_bytes(path, data)  # already says what to do on a full disk
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise _folder_error(err, f"write the cache entry {path}") from err


def _cached(
    path: Path, read: Read[T], check: Check[T], build: Callable[[], T], encode: Callable[[T], bytes]
) -> T:
    """The entry at `path` if it reads and passes `check`; else `build()`'s value, written once across
    processes (a bad entry is named in one warning, by the process that rebuilds it)."""
    if path.exists():
        value, problem = _checked(path, read, check)
        if problem is None:
            return value
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path) + ".lock")
        lock.acquire()
    except OSError as err:
        raise _folder_error(err, f"use the cache folder {path.parent}") from err
    try:
        if path.exists():  # another process may have built or repaired it while we waited
            value, problem = _checked(path, read, check)
            if problem is None:
                return value
            warnings.warn(f"cache entry {path}: {problem}; not used, built again", stacklevel=3)
        started = time.perf_counter()
        value = build()
        log.info("cache: built %s in %.1f s", path.name, time.perf_counter() - started)
        _write(path, encode(value))
        return value
    finally:
        lock.release()


def cached_tensors(
    cache_dir: str | Path,
    kind: str,
    key: str,
    build: Callable[[], dict[str, torch.Tensor]],
    expect: Mapping[str, Shape] | None = None,
) -> dict[str, torch.Tensor]:
    """Load `kind-key.safetensors` from `cache_dir`, or build, save and return it (once across processes).

    `expect` ({key: shape}) is what a usable entry holds: an entry on disk that cannot be read, has
    other keys or shapes, or holds NaN / Inf is rebuilt with a warning naming it. Without `expect` any
    keys and shapes are taken."""
    path = Path(cache_dir) / f"{kind}-{key}.safetensors"

    def fresh() -> dict[str, torch.Tensor]:
        return {k: v.detach().contiguous().cpu() for k, v in build().items()}

    def encode(tensors: dict[str, torch.Tensor]) -> bytes:
        bad = non_finite_keys(tensors)
        if bad:  # the builders recompute or name bad rows; this is the last line of defence
            raise FloatingPointError(f"cache {path.name}: {bad} hold NaN or Inf; nothing was cached")
        problem = tensors_problem(tensors, expect)
        if problem is not None:
            raise _built_wrong(path, problem)
        return save(tensors)

    return _cached(path, _read_tensors, lambda t: tensors_problem(t, expect), fresh, encode)


def cached_json(
    cache_dir: str | Path,
    kind: str,
    key: str,
    build: Callable[[], object],
    expect: Check[object] | None = None,
) -> object:
    """Like `cached_tensors` for small JSON results (e.g. generated suffixes); `expect` says what is
    wrong with a value read back (e.g. `strings(10)`), or None when it is usable."""
    path = Path(cache_dir) / f"{kind}-{key}.json"
    check = expect or (lambda _: None)

    def encode(value: object) -> bytes:
        problem = check(value)
        if problem is not None:
            raise _built_wrong(path, problem)
        return json.dumps(value, indent=1).encode()

    return _cached(path, _read_json, check, build, encode)
