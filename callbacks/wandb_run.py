"""The W&B logger of the shipped configs: online when the user is logged in, offline otherwise, so a
fresh clone logs without an account and `wandb sync` uploads later."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment


def wandb_logged_in() -> bool:
    """An API key in WANDB_API_KEY or in the netrc entry `wandb login` writes for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def offline_by_default(offline: bool | None) -> bool:
    """`offline` as given; if unset, WANDB_MODE decides when set, else whether the user is logged in."""
    if offline is not None:
        return offline
    mode = os.environ.get("WANDB_MODE")
    if mode:
        return mode in {"offline", "dryrun"}
    return not wandb_logged_in()


class WandbRun(WandbLogger):
    """A `WandbLogger` whose runs go to `save_dir`/wandb (`wandb sync` from that folder finds them).

    Args:
        project: the W&B project.
        save_dir: the folder that holds the `wandb/` run folders (default: $WANDB_DIR, else the working
            directory, where `wandb sync` with no path looks).
        name: the run's display name (default: W&B's generated one).
        job_type: what the run does (expand, classifier, sweep …), for filtering in the W&B UI.
        tags: free-form tags.
        offline: None: online when logged in (`wandb login` or WANDB_API_KEY), else offline; WANDB_MODE,
            when set, decides instead.
    """

    def __init__(
        self,
        project: str = "diffexpand",
        save_dir: str | None = None,
        name: str | None = None,
        job_type: str | None = None,
        tags: list[str] | None = None,
        offline: bool | None = None,
    ):
        # absolute: W&B's service process, which writes the run, may have been started by an earlier run
        # of this process from another working directory, and would resolve a relative path from there
        save_dir = os.path.abspath(save_dir or os.environ.get("WANDB_DIR") or ".")
        os.makedirs(save_dir, exist_ok=True)
        super().__init__(
            project=project,
            save_dir=save_dir,
            name=name,
            offline=offline_by_default(offline),
            job_type=job_type,
            tags=tags,
        )
        # WandbLogger always passes `anonymous` (None when unset), which wandb 0.31 warns is ignored
        self._wandb_init.pop("anonymous", None)
        self.joined = False  # whether it logs into a run someone else started (and will finish)

    @property
    @rank_zero_experiment
    def experiment(self):
        """The W&B run; a run already open in this process (sweep.py's, which holds every stage of one
        proposal) is joined on purpose, without WandbLogger's warning, and left for its owner to finish."""
        import wandb

        if self._experiment is None and wandb.run is not None:
            self._experiment, self.joined = wandb.run, True
        return WandbLogger.experiment.fget(self)

    def finalize(self, status: str) -> None:
        """A run that failed is closed as failed (exit code 1) here: the shells' normal close is never
        reached, and an open run would be joined by the next logger of this process (a sweep's next
        proposal, the next in-process call)."""
        super().finalize(status)
        if status == "failed" and self._experiment is not None and not self.joined:
            self._experiment.finish(exit_code=1)


def wandb_run_lines(trainer) -> list[str]:
    """Where each started W&B run of `trainer` is (absolute), and how to upload it when offline."""
    lines = []
    for logger in trainer.loggers:
        if (
            not isinstance(logger, WandbLogger)
            or logger._experiment is None
            or getattr(logger, "joined", False)
        ):
            continue  # never started (asking would start one), or its owner reports it
        run = logger.experiment
        folder = Path(run.dir).parent.expanduser().resolve()  # run.dir is <run folder>/files
        if getattr(run, "offline", False):
            lines.append(f"W&B run: {folder} (offline; upload: wandb sync {folder})")
        else:
            lines.append(f"W&B run: {folder} {run.url}")
    return lines


def finish_wandb_runs(trainer) -> None:
    """Close the W&B runs so the summary and the offline log are complete when the command returns
    (Lightning leaves them open for notebooks; in-process callers such as sweeps start new ones)."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            if not getattr(logger, "joined", False):
                logger.experiment.finish()
