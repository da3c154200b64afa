"""Per-sample randomness that does not depend on batch size, rank or order."""

from __future__ import annotations

import hashlib

import torch


def sample_seed(base_seed: int, sample_id: str) -> int:
    """A 63-bit seed derived from the run seed and the sample's stable id."""
    digest = hashlib.sha256(f"{base_seed}:{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def seeded_randn(seeds: list[int], shape: tuple[int, ...], device=None, dtype=torch.float32) -> torch.Tensor:
    """One independent N(0, I) tensor of `shape` per seed, stacked; generated on the CPU so results
    are identical on every device."""
    noise = [torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    return torch.stack(noise).to(device=device, dtype=dtype)
