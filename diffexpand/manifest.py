"""The synthetic-set manifest: `metadata.jsonl` in the Hugging Face `imagefolder` convention.

One JSON object per line, `file_name` (relative to the folder) first, then `label` and whatever the
method recorded. Images are written atomically before their line is appended, so a line always
points to a complete image; a torn last line (a crash mid-append) is ignored on reading.
"""

from __future__ import annotations

import errno
import json
import os
import threading
from pathlib import Path

from filelock import FileLock

from .redact import redact

MANIFEST_NAME = "metadata.jsonl"


def read_manifest(folder: str | Path) -> list[dict]:
    path = Path(folder) / MANIFEST_NAME
    if not path.exists():
        return []
    records = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break  # torn final line from an interrupted append
            if line.strip():
                records.append(json.loads(line))
    return records


def append_manifest(folder: str | Path, records: list[dict]) -> None:
    """Append records, each line complete and flushed to disk before returning. A file lock serialises
    writers (DDP ranks share one manifest): one rank's torn-tail repair must never cut another rank's
    line, and each append is one write call."""
    path = Path(folder) / MANIFEST_NAME
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    with FileLock(str(path) + ".lock"):
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
