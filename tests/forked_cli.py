"""Run the CLI shells as real processes without paying their imports each time.

The kill tests start a run, SIGKILL it and start it again, twenty times. Most of each start is Python
importing torch, Lightning, diffusers and transformers (several seconds on 2 cores), which writes
nothing and so is no interesting place for a kill. A `ForkedCLI` imports the shells once in a server
process and forks a child for every run: each run is still its own process, killed with a real SIGKILL
part-way through model loading, cache building, generation or writing, and exactly the code path of
`python expand.py predict ...` from `cli_main` on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SERVER = r"""
import json, os, signal, sys
sys.path.insert(0, os.getcwd())
from diffexpand.cli import run_with_clear_errors, silence_known_noise
import expand, train  # the imports every run would repeat
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel: no zombies
for line in sys.stdin:
    argv = json.loads(line)
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # a run waits for its own children (W&B's service)
        sys.stdin.close()
        quiet = os.open(os.devnull, os.O_WRONLY)
        os.dup2(quiet, 1)
        os.dup2(quiet, 2)
        code = 0
        try:
            silence_known_noise()
            shell = {"expand.py": expand, "train.py": train}[argv[0]]
            run_with_clear_errors(lambda: shell.cli_main(argv[1:]))
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else 1
        except BaseException:
            code = 1
        os._exit(code)
    print(pid, flush=True)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class ForkedCLI:
    """`with ForkedCLI(env) as cli: pid = cli.start(["expand.py", "predict", ...])`."""

    def __init__(self, env: dict):
        self.env = env

    def __enter__(self) -> ForkedCLI:
        self.server = subprocess.Popen(
            [sys.executable, "-c", SERVER], cwd=REPO, env=self.env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        return self

    def start(self, argv: list[str]) -> int:
        """Fork a run of `argv` (a shell's file name, then its arguments); its process id."""
        self.server.stdin.write(json.dumps(argv) + "\n")
        self.server.stdin.flush()
        line = self.server.stdout.readline()
        if not line:
            raise RuntimeError("the forking server ended (see its stderr above)")
        return int(line)

    @staticmethod
    def kill_and_wait(pid: int, timeout: float = 60.0) -> None:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
        deadline = time.time() + timeout
        while alive(pid) and time.time() < deadline:
            time.sleep(0.005)

    def __exit__(self, *exc) -> None:
        self.server.stdin.close()
        self.server.wait(timeout=60)
