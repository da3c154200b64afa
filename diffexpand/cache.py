"""Heavy intermediate results (VAE latents, inversion pools) cached on disk as safetensors.

The file name is a hash of everything the result depends on, so a change of model, data, concept folder
or settings gives a new entry and a sweep over anything else reuses it. A file lock makes concurrent
processes (DDP ranks, parallel sweep runs) build each entry once; writes are atomic (a full disk leaves
no partial file and says so), and an entry holding NaN or Inf is never written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch
from filelock import FileLock
from safetensors.torch import load_file, save

from diffexpand.manifest import atomic_write_bytes

log = logging.getLogger(__name__)


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


def cached_tensors(
    cache_dir: str | Path, kind: str, key: str, build: Callable[[], dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """Load `kind-key.safetensors` from `cache_dir`, or build, save and return it (once across processes)."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{kind}-{key}.safetensors"
    if path.exists():
        return load_file(path)
    with FileLock(str(path) + ".lock"):
        if path.exists():  # another process built it while we waited
            return load_file(path)
        started = time.perf_counter()
        tensors = {k: v.detach().contiguous().cpu() for k, v in build().items()}
        log.info("cache: built %s in %.1f s", path.name, time.perf_counter() - started)
        bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(v.isfinite().all())]
        if bad:  # the builders recompute or name bad rows; this is the last line of defence
            raise FloatingPointError(f"cache {path.name}: {bad} hold NaN or Inf; nothing was cached")
        atomic_write_bytes(path, save(tensors))
        return tensors


def cached_json(cache_dir: str | Path, kind: str, key: str, build: Callable[[], object]) -> object:
    """Like `cached_tensors` for small JSON results (e.g. generated suffixes)."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{kind}-{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    with FileLock(str(path) + ".lock"):
        if path.exists():
            return json.loads(path.read_text())
        started = time.perf_counter()
        value = build()
        log.info("cache: built %s in %.1f s", path.name, time.perf_counter() - started)
        atomic_write_bytes(path, json.dumps(value, indent=1).encode())
        return value
