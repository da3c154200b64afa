"""A model folder's files: which prior they are (a content fingerprint) and which of them cannot be read.

Identity. Concept tokens and a LoRA fit only the weights they were learned on, so a concept folder
records the fingerprint of its prior and is refused on another. The fingerprint covers what the concepts
depend on: the text encoder, tokenizer, UNet and VAE (their configs and the weight files a loader reads),
not the model card, samples or quality figures, so re-writing a card keeps concepts valid; configs count
without the entries that only record how they were written (library version, dtype). It hashes contents
and paths relative to the folder only (no absolute paths, no mtimes): a copy of the folder, or the same
model on another machine, has the same fingerprint. A hub id is fingerprinted through its resolved
snapshot folder in the local cache.

Integrity. Libraries report a damaged file without its path ("header too large"); `unreadable_file`
finds it by reading each config and each weight file's header, so a load error can name it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from diffexpand.paths import REPO_ROOT, portable

# Bumped whenever what is hashed changes: a fingerprint of another scheme is not comparable.
FINGERPRINT_SCHEME = "sd-files-v1"
CONFIG_FILES = ("text_encoder/config.json", "unet/config.json", "vae/config.json")
WEIGHT_FOLDERS = ("text_encoder", "unet", "vae")
TOKENIZER_FOLDER = "tokenizer"
# Files up to this size are hashed in full (the tiny prior's largest is 7 MB: under a tenth of a second).
FULL_HASH_LIMIT = 64 * 2**20
# Larger files (SD-1.5's UNet is 3.4 GB) are hashed by sample, since every expansion computes the
# fingerprint: their size, the safetensors header (every tensor's name, dtype, shape and offsets) and
# SAMPLE_COUNT evenly spaced chunks of SAMPLE_BYTES, the first and the last among them. Another training
# run or fine-tune changes every chunk; an edit confined to bytes between chunks would go unnoticed.
SAMPLE_COUNT, SAMPLE_BYTES = 16, 2**20
MAX_SAFETENSORS_HEADER = 100 * 2**20  # the format's own limit
# Config entries that say how or by which library version a file was written, not what the model
# computes: a re-save by a newer library, or in another dtype, keeps the identity.
BOOKKEEPING_KEYS = {
    "_diffusers_version",
    "transformers_version",
    "_name_or_path",
    "name_or_path",
    "dtype",
    "torch_dtype",
}
WEIGHT_FILE = (
    r"(?:model|pytorch_model|diffusion_pytorch_model){variant}(?:-\d+-of-\d+)?\.{ext}(?:\.index\.json)?"
)

# Committed artifacts and how to make them again (shown in load errors).
ASSET_RECIPES = {
    "tiny-fashion-prior-v3": "make prior",
    "fashion-oracle": "make oracle",
    "tiny-fashion-clip": "make clip",
    "concepts": "make concepts",
}


@dataclass(frozen=True)
class ModelIdentity:
    """Which model a set of parts was loaded from: `name` (hub id or folder, for people) and
    `fingerprint` (of its contents, for comparison)."""

    name: str
    fingerprint: str

    def describe(self) -> str:
        return f"'{self.name}' (fingerprint {short(self.fingerprint)})"


def short(fingerprint: str) -> str:
    """The scheme and the first 16 hex digits: enough to tell two priors apart in a message."""
    scheme, _, digest = fingerprint.rpartition(":")
    return f"{scheme}:{digest[:16]}" if scheme else digest[:16]


def model_identity(source: str | Path, revision: str | None = None, variant: str | None = None):
    """The identity of a local diffusers folder or of a hub id's cached snapshot; None for a hub id
    that is not in the local cache (nothing on disk to fingerprint)."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        return ModelIdentity(portable(folder.resolve()), model_fingerprint(folder, variant))
    snapshot = snapshot_folder(str(source), revision)
    if snapshot is None:
        return None
    return ModelIdentity(str(source), model_fingerprint(snapshot, variant))


def snapshot_folder(repo_id: str, revision: str | None = None) -> Path | None:
    """The local snapshot folder of a hub model (no network), or None."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except Exception:  # not cached, or not a valid repo id: the hub library raises many kinds
        return None


def model_fingerprint(folder: str | Path, variant: str | None = None) -> str:
    """Content fingerprint of a diffusers-layout folder (see the module docstring)."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in identity_files(folder, variant):
        relative = path.relative_to(folder).as_posix()
        digest.update(f"{relative}\t{file_digest(path)}\n".encode())  # the digest covers the size
    return f"{FINGERPRINT_SCHEME}:{digest.hexdigest()}"


def identity_files(folder: Path, variant: str | None = None) -> list[Path]:
    """The files a prior's identity covers, in a fixed order."""
    files = [folder / name for name in CONFIG_FILES if (folder / name).is_file()]
    tokenizer = folder / TOKENIZER_FOLDER
    if tokenizer.is_dir():
        files += sorted(p for p in tokenizer.iterdir() if p.is_file())
    for name in WEIGHT_FOLDERS:
        files += weight_files(folder / name, variant)
    return files


def weight_files(folder: Path, variant: str | None = None) -> list[Path]:
    """The weight files a loader reads from one part's folder: safetensors before PyTorch pickles, the
    variant's files (e.g. fp16) when asked for and present, shards with their index. A hub snapshot
    holds what was downloaded, which differs between users; only these files count."""
    if not folder.is_dir():
        return []
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    for tag in ([f".{variant}"] if variant else []) + [""]:
        for ext in ("safetensors", "bin"):
            pattern = re.compile(WEIGHT_FILE.format(variant=re.escape(tag), ext=ext))
            found = [folder / name for name in names if pattern.fullmatch(name)]
            if found:
                return found
    return []


def file_digest(path: Path) -> str:
    if path.name.endswith("config.json"):  # settings; the vocabulary (tokenizer.json, MBs) counts as bytes
        return json_digest(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        if size <= FULL_HASH_LIMIT:
            return hashlib.file_digest(f, "sha256").hexdigest()
        digest = hashlib.sha256(f"sampled:{size}".encode())
        if path.name.endswith(".safetensors"):
            length = int.from_bytes(f.read(8), "little")
            digest.update(f.read(min(length, MAX_SAFETENSORS_HEADER)))
        for k in range(SAMPLE_COUNT):
            f.seek(k * (size - SAMPLE_BYTES) // (SAMPLE_COUNT - 1))
            digest.update(f.read(SAMPLE_BYTES))
        return "sampled-" + digest.hexdigest()


def json_digest(path: Path) -> str:
    """A JSON file's content without its bookkeeping entries, in a canonical form (key order and
    whitespace do not count); the bytes when it is not valid JSON."""
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return hashlib.sha256(path.read_bytes()).hexdigest()
    if isinstance(values, dict):
        values = {k: v for k, v in values.items() if k not in BOOKKEEPING_KEYS}
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "json-" + hashlib.sha256(canonical.encode()).hexdigest()


# ---- integrity ------------------------------------------------------------------------------------
class CorruptModelFileError(OSError):
    """A file of a model, concept folder or checkpoint cannot be read; the message names it."""


def corrupt_file_error(path: str | Path, problem: str, remedy: str | None = None) -> CorruptModelFileError:
    """The error for a damaged file: the file, what is wrong, and what to do."""
    return CorruptModelFileError(
        f"{path} cannot be read: {problem}. The file is damaged, incomplete or not of its kind; "
        f"{remedy or how_to_replace(path)}"
    )


def read_checkpoint(path: str | Path, remedy: str) -> object:
    """A torch checkpoint read without running pickled code (weights_only=True). Any failure to read it
    raises the damaged-file error naming the file and `remedy`: torch's own message names no file, and a
    refused pickle means the same to the user as a truncated file."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - see the docstring
        problem = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise corrupt_file_error(path, f"not a checkpoint torch can read safely ({problem})", remedy) from err


def how_to_replace(path: str | Path) -> str:
    """What to do about a damaged file, by where it lives."""
    path = Path(path).resolve()
    assets = REPO_ROOT / "assets"
    if path.is_relative_to(assets):
        parts = path.relative_to(assets).parts
        folder = Path("assets", *parts[:2]) if parts[0] == "concepts" else Path("assets", parts[0])
        recipe = ASSET_RECIPES.get(parts[0])
        make = f", or make it again: `{recipe}`" if recipe else ""
        return f"restore the committed copy: `git checkout -- {folder}`{make}."
    hub = next((p for p in path.parts if p.startswith("models--")), None)
    if hub is not None:
        repo_id = hub.removeprefix("models--").replace("--", "/")
        return f"download it again: `hf download {repo_id} --force-download`."
    return "replace it with a good copy (download the model again, or make the folder again)."


def unreadable_file(folder: str | Path) -> tuple[Path, str] | None:
    """The first file under `folder` that cannot be read, with the problem; None when all can. Reads
    JSON and text files whole and safetensors headers (which also checks the file's length)."""
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            problem = file_problem(path)
            if problem is not None:
                return path, problem
    return None


def load_safetensors(path: str | Path, device: str = "cpu", remedy: str | None = None) -> dict:
    """The tensors of a safetensors file; a damaged one stops with `CorruptModelFileError` naming it
    (safetensors raises its own error type, without the path) and `remedy` (default: `how_to_replace`)."""
    from safetensors.torch import load_file

    try:
        return load_file(path, device=device)
    except Exception as err:
        problem = file_problem(Path(path)) or f"{type(err).__name__}: {err}"
        raise corrupt_file_error(path, problem, remedy) from err


def raise_if_damaged(folder: str | Path | None, cause: BaseException) -> None:
    """After a library failed to load the model in `folder` with `cause`: raise the error naming the
    first file of the folder that cannot be read (the libraries' own messages often lack the path).
    Returns when `folder` is no local folder (a hub id) or every file reads: the cause lies elsewhere."""
    if folder is None or not Path(folder).is_dir():
        return
    bad = unreadable_file(folder)
    if bad is not None:
        raise corrupt_file_error(*bad) from cause


def file_problem(path: Path) -> str | None:
    """Why `path` cannot be read, or None (also for kinds of files not checked)."""
    suffix = path.suffix
    try:
        if suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif suffix == ".txt":
            path.read_text(encoding="utf-8")
        elif suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(path, framework="pt"):
                pass
        elif suffix in {".bin", ".pt", ".pth", ".ckpt"}:
            import torch

            torch.load(path, map_location="cpu", weights_only=True)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"not valid {'JSON' if suffix == '.json' else 'UTF-8 text'} ({err})"
    except OSError as err:
        return f"cannot be opened ({err})"
    except Exception as err:  # safetensors and torch raise their own types for a malformed file
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return f"not a valid {suffix.lstrip('.')} weights file ({first_line})"
    return None
