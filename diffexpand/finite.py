"""Per-row checks for non-finite values in what the expander caches (real-image latents, inversions,
features): a NaN or Inf there would be saved and poison every sample built from that image on every
rerun, so it is caught where it is made."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch


def non_finite_rows(values: torch.Tensor) -> torch.Tensor:
    """Indices of the rows (first dimension) that hold a NaN or Inf."""
    return (~values.flatten(1).isfinite().all(1)).nonzero().flatten()


FLOAT32_HINT = ", or load the model with model.init_args.dtype=float32"


def refuse_non_finite(
    values: torch.Tensor, ids: Sequence[str], what: str, after: str = "", hint: str = FLOAT32_HINT
) -> None:
    """Stop with an error naming the images whose rows hold a NaN or Inf (nothing is cached then);
    `hint` ends the advice (empty where the weight dtype cannot matter, e.g. the float32 VAE)."""
    bad = [ids[i] for i in non_finite_rows(values).tolist()]
    if bad:
        raise FloatingPointError(
            f"{what} of {len(bad)} real image(s) hold NaN or Inf{after}: {bad[:10]}. "
            f"Check these images (or leave them out of the dataset folder){hint}; nothing was cached."
        )


def recompute_non_finite(
    values: torch.Tensor,
    recompute: Callable[[torch.Tensor], torch.Tensor],
    ids: Sequence[str],
    what: str,
    fallback: str,
) -> torch.Tensor:
    """Rows of `values` with a NaN or Inf are computed again by `recompute(indices)` (the documented
    fallback, e.g. float32 without autocast) with a warning naming them; rows still not finite stop
    the run with an error naming the images, before anything is cached."""
    bad = non_finite_rows(values)
    if len(bad) == 0:
        return values
    names = [ids[i] for i in bad.tolist()]
    values = values.clone()
    values[bad] = recompute(bad).to(values.dtype)
    refuse_non_finite(values[bad], [ids[i] for i in bad.tolist()], what, f" even with {fallback}")
    warnings.warn(
        f"{what} of {names[:10]} ({len(names)} image(s)) held NaN or Inf; computed again with {fallback}",
        stacklevel=2,
    )
    return values
