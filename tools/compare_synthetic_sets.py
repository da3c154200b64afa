"""Whether two synthetic sets are the same: record by record, the manifest lines and the pixels.

    python tools/compare_synthetic_sets.py BEFORE AFTER [--tolerance 1]

For each record id in either folder: are the manifest lines equal (and in the same key order), how far
apart are the images (largest per-pixel difference in 8-bit levels), and are the PNG files
byte-identical. Exits 1 when a record is missing, a line differs or an image differs by more than
`--tolerance` levels (the check used when refactoring: the same command on the same seeds must write
the same set).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from diffexpand.cli import run_with_clear_errors
from diffexpand.set_reader import CheckedSet, read_set


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image, dtype=int)


def by_record(checked: CheckedSet) -> dict[str, tuple[dict, Path]]:
    """Each record of a checked set with its image, by id (by file_name in a set without ids)."""
    return {
        r.get("id", r["file_name"]): (r, path) for r, path in zip(checked.records, checked.paths, strict=True)
    }


def compare(before: Path, after: Path) -> dict:
    a, b = by_record(read_set(before)), by_record(read_set(after))
    common = sorted(a.keys() & b.keys())
    differing_lines = [i for i in common if a[i][0] != b[i][0]]
    key_order = [i for i in common if list(a[i][0]) != list(b[i][0])]
    levels = [int(np.abs(pixels(a[i][1]) - pixels(b[i][1])).max()) for i in common]
    identical = sum(a[i][1].read_bytes() == b[i][1].read_bytes() for i in common)
    return {
        "records": len(common),
        "only_in_before": sorted(a.keys() - b.keys()),
        "only_in_after": sorted(b.keys() - a.keys()),
        "differing_lines": differing_lines,
        "differing_key_order": key_order,
        "max_level_difference": max(levels, default=0),
        "identical_files": identical,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--tolerance", type=int, default=1, help="largest allowed pixel difference (levels)")
    args = parser.parse_args(argv)
    result = compare(args.before, args.after)
    n, lines, order = result["records"], len(result["differing_lines"]), len(result["differing_key_order"])
    print(
        f"{n} records in both; lines differ: {lines}, key order differs: {order}; max pixel difference "
        f"{result['max_level_difference']} levels; byte-identical PNGs {result['identical_files']}/{n}; "
        f"only in before: {len(result['only_in_before'])}, only in after: {len(result['only_in_after'])}"
    )
    same = not (result["only_in_before"] or result["only_in_after"] or result["differing_lines"])
    return 0 if same and result["max_level_difference"] <= args.tolerance else 1


if __name__ == "__main__":
    run_with_clear_errors(lambda: sys.exit(main()))
