"""A guard against exporting weights whose training loss ran away at the end of a run.

Few-shot concept learning trains at a high constant learning rate on a handful of images; on one subset
of the tiny benchmark the loss held steady for 1,600 of 2,000 steps and then climbed to three times its
level, and the run exported its last, diverged weights. `LossWatch` smooths the per-step loss, keeps a
copy of the trainable weights whenever the smoothed loss reaches a new low (checked every few steps),
and says at the end whether the final weights should be replaced by that copy.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


class LossWatch:
    """Exponential moving average of the training loss plus the weights of its lowest point.

    smoothing: EMA factor per step (0.98 averages over about 50 steps, enough to flatten the spread
        that random diffusion timesteps put into single-step losses).
    check_every: steps between comparisons with the lowest smoothed loss so far (a copy is taken only
        at a new low, so the cost is a few copies of the trainable weights per run).
    start_after: steps before the first comparison: the smoothed loss of the first steps is not yet
        an average.
    tolerance: the run counts as diverged when its final smoothed loss exceeds the lowest one by this
        factor, or when a loss was not finite.
    """

    def __init__(
        self, smoothing: float = 0.98, check_every: int = 50, start_after: int = 200, tolerance: float = 1.25
    ):
        if not 0.0 < smoothing < 1.0:
            raise ValueError(f"smoothing must lie in (0, 1), got {smoothing}")
        if check_every < 1 or start_after < 0:
            raise ValueError(f"need check_every >= 1, start_after >= 0; got {check_every}, {start_after}")
        if not tolerance > 1.0:
            raise ValueError(f"tolerance must be > 1 (the final loss may not be the lowest), got {tolerance}")
        self.smoothing = smoothing
        self.check_every = check_every
        self.start_after = start_after
        self.tolerance = tolerance
        self._average, self._count = 0.0, 0
        self.best_loss, self.best_step = math.inf, None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.saw_non_finite = False

    @property
    def smoothed(self) -> float:
        """The bias-corrected moving average (NaN before the first step)."""
        if self._count == 0:
            return math.nan
        return self._average / (1.0 - self.smoothing**self._count)

    def observe(self, step: int, loss: float, snapshot: Callable[[], dict[str, torch.Tensor]]) -> None:
        """Record the loss of the weights after `step` optimizer updates. `snapshot` returns detached
        copies of those weights; it is called only at a new low."""
        if not math.isfinite(loss):
            self.saw_non_finite = True  # one NaN would poison the average for the rest of the run
            return
        self._count += 1
        self._average = self.smoothing * self._average + (1.0 - self.smoothing) * loss
        if step >= self.start_after and step % self.check_every == 0 and self.smoothed < self.best_loss:
            self.best_loss, self.best_step, self.best_state = self.smoothed, step, snapshot()

    @property
    def diverged(self) -> bool:
        """True when the final weights are worse than the kept copy by the tolerance (or a loss was
        not finite) and a copy exists to fall back on."""
        if self.best_state is None:
            return False
        return self.saw_non_finite or self.smoothed > self.tolerance * self.best_loss

    # ---- checkpoints: a resumed run keeps its lowest point -----------------------------------------
    def state_dict(self) -> dict:
        return {
            "average": self._average,
            "count": self._count,
            "best_loss": self.best_loss,
            "best_step": -1 if self.best_step is None else self.best_step,
            "best_state": self.best_state or {},
            "saw_non_finite": self.saw_non_finite,
        }

    def load_state_dict(self, state: dict) -> None:
        self._average, self._count = float(state["average"]), int(state["count"])
        self.best_loss = float(state["best_loss"])
        self.best_step = None if int(state["best_step"]) < 0 else int(state["best_step"])
        self.best_state = dict(state["best_state"]) or None
        self.saw_non_finite = bool(state["saw_non_finite"])
