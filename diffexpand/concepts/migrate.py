"""Bring concept folders' concepts.json up to the current format, without retraining.

    python -m diffexpand.concepts.migrate FOLDER [FOLDER ...] [--prior PRIOR]

concepts.json is rewritten by the writer the concept learner uses (so a migrated file equals a freshly
trained one); every other file of the folder is checked to be byte-identical afterwards.

--prior records the identity (name and content fingerprint) of the prior the concepts were learned on,
in a folder written before it was recorded; expansion then refuses the concepts on any other prior.
Give the prior they were really learned on: it is not checked (nothing else records it), and a folder
that already records another fingerprint is refused.
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


def prior_identity(prior):
    """The identity of a prior given as a folder (also repository-relative, from any directory) or as
    a hub id in the local cache."""
    from diffexpand.models.identity import model_identity
    from diffexpand.models.loading import ModelNotAvailableError
    from diffexpand.paths import in_repo

    identity = model_identity(in_repo(prior) or prior)
    if identity is None:
        raise ModelNotAvailableError(
            f"--prior {prior!r} is neither a model folder nor a hub id in the local cache: nothing to "
            "fingerprint"
        )
    return identity


def migrate(folder, prior=None) -> None:
    """Rewrite `folder`'s concepts.json; `prior`: the prior it was learned on (a folder or hub id),
    whose identity is recorded."""
    folder = Path(folder)
    before = _other_files(folder)
    rewrite_concepts_json(folder, prior_identity(prior) if prior is not None else None)
    if _other_files(folder) != before:  # the writer must only ever touch concepts.json
        raise RuntimeError(f"migrating {folder} changed files other than {CONCEPTS_JSON}")


def main(argv=None) -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("folders", nargs="+", help="concept folders (with concepts.json)")
    parser.add_argument("--prior", help="the prior the concepts were learned on: a model folder or hub id")
    args = parser.parse_args(argv)
    for folder in args.folders:
        migrate(folder, args.prior)
        print(f"rewrote {Path(folder) / CONCEPTS_JSON}")


if __name__ == "__main__":
    from diffexpand.cli import run_with_clear_errors

    run_with_clear_errors(main)
