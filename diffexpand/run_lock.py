"""One expansion run per output folder at a time.

Two runs writing one synthetic set would plan the same records and both append them (every image
twice in the manifest). The first run therefore holds a lock on the folder for its whole lifetime and
a second run is refused at once with a message naming the holder (read from the holder's note, which it
waits a few seconds for if the holder has only just taken the lock). The lock is an OS file lock
(`filelock`, fcntl on Unix): the kernel drops it when its process dies, so a SIGKILLed run never leaves
a stale lock behind and the same command can be run again straight away.

Only one process of a run takes it: the one that starts the run (global rank 0, which launches the
other DDP ranks). The other ranks are part of the holder's run and write into the folder with it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from filelock import FileLock, Timeout

from diffexpand.manifest import atomic_write_bytes

LOCK_NAME = ".diffexpand-run.lock"
HOLDER_NAME = ".diffexpand-run.json"  # who holds the lock (the lock file itself is truncated by filelock)
NOTE_WAIT_S = 5.0  # how long a refused run waits for the holder's note before naming it "another process"


class OutputFolderBusyError(RuntimeError):
    """Another run is writing into the same output folder."""


def launching_rank() -> bool:
    """Whether this process starts the run, not a DDP rank launched by it or by torchrun / SLURM."""
    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        value = os.environ.get(name, "").strip()
        if value and value != "0":
            return False
    return True


class OutputFolderLock:
    """Held with `with OutputFolderLock(folder):` around a run; refuses at once when held elsewhere."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._lock = FileLock(str(self.folder / LOCK_NAME), timeout=0)

    def __enter__(self) -> OutputFolderLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except Timeout:
            raise OutputFolderBusyError(self._busy_message()) from None
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv),
        }
        atomic_write_bytes(self.folder / HOLDER_NAME, (json.dumps(holder) + "\n").encode())
        return self

    def __exit__(self, *exc) -> None:
        (self.folder / HOLDER_NAME).unlink(missing_ok=True)
        self._lock.release()

    def _busy_message(self) -> str:
        who = self._holder_description()
        return (
            f"{self.folder} is being written by {who}. Two runs into one output folder would write "
            "every image twice: wait for that run to end, or give this one another --output_dir"
        )

    def _holder_description(self) -> str:
        """The holder's note, waited for briefly: a run that has just taken the lock writes it a moment later,
        and on a loaded machine that moment can be long enough for a second run to look in between."""
        deadline = time.monotonic() + NOTE_WAIT_S
        while True:
            try:
                holder = json.loads((self.folder / HOLDER_NAME).read_text())
                started = f"started {holder['started']}: {holder['command']}"
                return f"process {holder['pid']} on {holder['host']} ({started})"
            except (OSError, ValueError, KeyError, TypeError):
                if time.monotonic() >= deadline:
                    return "another process"  # a holder that never wrote its note (or wrote a damaged one)
                time.sleep(0.05)
