"""When DistDiff guides: M counted from the clean end of the full schedule, as the official code does.

The official code takes `timesteps[N − M : N − M + P]` of the full N-step schedule: guidance runs at
step N − M (index into the full schedule, 0 = noisiest) and its rollout covers P steps from there.
With N = 50, strength 0.5 (sampling starts at index 25, t = 481), M = 20, P = 2: indices 30, 31,
i.e. t = 381 and 361. A stage name picks M by position within the sampled part: "chaos",
"semantic", "refinement" are the middles of its first, second and last third.
"""

from __future__ import annotations

STAGES = ("chaos", "semantic", "refinement")


def resolve_guidance_steps(
    spec, num_inference_steps: int, start: int, rollout_steps: int, strength: float | None = None
) -> list[int]:
    """Full-schedule indices (ascending) at which guidance runs, from `spec`: M (an int, counted
    from the clean end), a stage name, or a list of those. Every guidance step and its P − 1 rollout
    steps must lie inside the sampled part [start, N); one that does not is an error naming M, the
    strength and the allowed range, never a silent no-op (the official code would skip it)."""
    items = spec if isinstance(spec, list | tuple) else [spec]
    if not items:
        raise ValueError("give at least one guidance step (M or a stage name)")
    n, sampled = num_inference_steps, num_inference_steps - start
    low, high = rollout_steps, sampled  # M ∈ [P, N − start]
    indices = []
    for item in items:
        if isinstance(item, str) and not item.lstrip("-").isdigit():
            if item not in STAGES:
                raise ValueError(f"guidance stage must be one of {STAGES} or an integer M, got {item!r}")
            offset = min(round((2 * STAGES.index(item) + 1) * sampled / 6), sampled - rollout_steps)
            m = sampled - max(offset, 0)
        else:
            m = int(item)
        if not low <= m <= high:
            at = f" and strength {strength}" if strength is not None else f" (sampling from step {start})"
            raise ValueError(
                f"guidance step M={item!r} lies outside the sampled range: with {n} steps{at}, "
                f"{sampled} steps are sampled and M (counted from the clean end, as in the official "
                f"code) must be in [{low}, {high}] for rollout_steps={rollout_steps}"
            )
        indices.append(n - m)
    return sorted(set(indices))
