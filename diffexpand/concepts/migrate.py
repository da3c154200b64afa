"""Bring concept folders' concepts.json up to the current format, without retraining.

    python -m diffexpand.concepts.migrate FOLDER [FOLDER ...]

concepts.json is rewritten by the writer the concept learner uses (so a migrated file equals a freshly
trained one); every other file of the folder is checked to be byte-identical afterwards.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from .io import rewrite_concepts_json
from .metadata import CONCEPTS_JSON


def _other_files(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != CONCEPTS_JSON
    }


def migrate(folder) -> None:
    folder = Path(folder)
    before = _other_files(folder)
    rewrite_concepts_json(folder)
    if _other_files(folder) != before:  # the writer must only ever touch concepts.json
        raise RuntimeError(f"migrating {folder} changed files other than {CONCEPTS_JSON}")


def main(argv=None) -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("folders", nargs="+", help="concept folders (with concepts.json)")
    for folder in parser.parse_args(argv).folders:
        migrate(folder)
        print(f"rewrote {Path(folder) / CONCEPTS_JSON}")


if __name__ == "__main__":
    main()
