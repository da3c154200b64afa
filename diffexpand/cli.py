"""What the command-line shells (train.py, expand.py, sweep.py) share: known-harmless library noise
silenced by message, and errors this project raises on purpose printed as one clear line.

Only messages listed here are silenced, each with the reason it is harmless; anything else a library
says still reaches the user.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TRACEBACK_ENV = "DIFFEXPAND_TRACEBACK"

# (category, message regex, why it is harmless)
HARMLESS_WARNINGS: list[tuple[type[Warning], str, str]] = [
    # Lightning's own pytree helper builds LeafSpec() on every batch transfer; torch deprecated the
    # class, not the behaviour Lightning relies on.
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated", "Lightning internals"),
    # The CLIs pass the command line as `args` on purpose (the embedded default config is inserted).
    (UserWarning, r"LightningCLI's args parameter is intended to run from within Python", "by design"),
    # The concept learner and the prior trainer keep their frozen parts (VAE, UNet or text encoder)
    # in eval mode on purpose: no dropout or norm statistics in what does not train.
    (Warning, r"Found \d+ module\(s\) in eval mode at the start of training", "frozen parts"),
]

# (logger name, message fragment): INFO advertisements, not information about the run.
HARMLESS_LOG_LINES: list[tuple[str, str]] = [
    ("lightning.pytorch.utilities.rank_zero", "litlogger"),
    ("lightning.fabric.utilities.rank_zero", "litlogger"),
]


class _DropMessages(logging.Filter):
    def __init__(self, fragment: str):
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


def silence_known_noise() -> None:
    """Install the filters above (idempotent)."""
    for category, message, _why in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name, fragment in HARMLESS_LOG_LINES:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) and f.fragment == fragment for f in logger.filters):
            logger.addFilter(_DropMessages(fragment))


def raised_on_purpose(err: BaseException) -> bool:
    """Whether `err` was raised by this project's own code (its innermost frame is a file of this
    repository, not of an installed library): those errors carry a message written for the user, so a
    traceback adds nothing. Errors from libraries keep their traceback."""
    if not isinstance(err, Exception):
        return False
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    file = Path(tb.tb_frame.f_code.co_filename).resolve()
    return REPO in file.parents and "site-packages" not in file.parts


def purposeful_error(err: BaseException) -> Exception | None:
    """The error of ours behind `err`: `err` itself, or the one a library wrapped it in (jsonargparse
    reports a failed instantiation as "Does not validate against any of the Union subtypes", with
    our error as its cause)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if raised_on_purpose(err):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def run_with_clear_errors(main: Callable[[], object]) -> None:
    """Run `main`; an error the project raised on purpose is printed as `error: <message>` and exits 1
    (set DIFFEXPAND_TRACEBACK=1 for the traceback)."""
    try:
        main()
    except Exception as err:
        ours = purposeful_error(err)
        if os.environ.get(TRACEBACK_ENV) or ours is None:
            raise
        message = str(ours).strip() or type(ours).__name__
        # the message last, where the eye lands; the way to the traceback just above it
        print(f"(traceback: rerun with {TRACEBACK_ENV}=1)\nerror: {message}", file=sys.stderr)
        sys.exit(1)
