"""When the project draws progress bars: one switch for all of them (DIFFEXPAND_NO_PROGRESS)."""

from __future__ import annotations

import os
import sys

NO_PROGRESS = "DIFFEXPAND_NO_PROGRESS"  # set to anything but "" or "0": no progress bars


def progress_switched_off() -> bool:
    """DIFFEXPAND_NO_PROGRESS is set to anything but "" or "0" (every bar of the project obeys it)."""
    return os.environ.get(NO_PROGRESS, "").strip() not in ("", "0")


def progress_wanted(stream=None) -> bool:
    """Whether a bar of slow set-up work (cache builds, the image-folder check) is drawn: only onto a
    terminal (`stream`, default stderr), and not when DIFFEXPAND_NO_PROGRESS is set (tqdm's own
    TQDM_DISABLE=1 works too). No rank rule: input builders run inside a cache entry's file lock, so
    exactly one process (DDP rank or sweep run) builds each entry while the others wait, and a
    rank-0-only rule would hide the bar whenever another rank wins the lock."""
    if progress_switched_off():
        return False
    isatty = getattr(sys.stderr if stream is None else stream, "isatty", None)
    return bool(isatty and isatty())
