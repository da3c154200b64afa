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

from diffexpand.cli import run_with_clear_errors
from diffexpand.set_reader import CheckedSet, read_nonempty_set


def by_record(checked: CheckedSet) -> dict[str, tuple[dict, Path, int]]:
    """Each record of a checked set with its image and index, by id (by file_name in a set without ids)."""
    return {r.get("id", r["file_name"]): (r, checked.paths[i], i) for i, r in enumerate(checked.records)}


def level_difference(record: str, first: CheckedSet, i: int, second: CheckedSet, j: int) -> int:
    """The largest per-pixel difference (8-bit levels, RGB) between two records' images."""
    a, b = np.asarray(first.image(i), dtype=int), np.asarray(second.image(j), dtype=int)
    if a.shape != b.shape:
        raise ValueError(f"record {record!r}: the images differ in size ({a.shape[1]}x{a.shape[0]} in "
                         f"{first.folder}, {b.shape[1]}x{b.shape[0]} in {second.folder})")  # fmt: skip
    return int(np.abs(a - b).max())


def compare(before: Path, after: Path) -> dict:
    first, second = read_nonempty_set(before), read_nonempty_set(after)
    a, b = by_record(first), by_record(second)
    common = sorted(a.keys() & b.keys())
    differing_lines = [i for i in common if a[i][0] != b[i][0]]
    key_order = [i for i in common if list(a[i][0]) != list(b[i][0])]
    levels = [level_difference(i, first, a[i][2], second, b[i][2]) for i in common]
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
