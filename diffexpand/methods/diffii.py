"""Diff-II (Wang & Chen): inversion spherical interpolation with two-stage denoising.

1. Invert every real image of a class with DDIM, conditioned on its learned concept prompt (the pool).
2. For each synthetic image pick two inversions I_a, I_b of one class and move along their great circle:
   Z = sin((1+λ)α)/sin α · I_a − sin(λα)/sin α · I_b with λ ~ U[0, 2π/α] (`lambda_range` can narrow
   it to the arc between them, or the rest of the circle).
3. Denoise Z: the steps with t >= T·(1 − split_ratio) (the noisier part; the official code's criterion)
   with "prompt + suffix", the rest with the plain prompt — suffixes add diversity, the plain finish
   keeps faithfulness.

A class with one real image has no pair: its inversion is paired with a seeded Gaussian latent of the
same norm (spherical moves between a real inversion and fresh noise), recorded as
`pair: "gaussian"` and warned about once per run. Two real images whose inversions are (anti)parallel
— duplicates in the dataset — have no great circle either: the record falls back to the same Gaussian
partner, with one warning per such pair naming both images.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from diffexpand.cache import strings
from diffexpand.concepts.metadata import with_suffix as append_suffix
from diffexpand.finite import recompute_non_finite
from diffexpand.sampling import Schedule, angle_between, cfg_model_fn, ddim_invert, ddim_sample
from diffexpand.sampling.interpolation import lambda_from_fraction, spherical_inter_extrapolate
from diffexpand.suffixes import resolve_suffixes

from .base import ExpansionMethod, class_members
from .common import conditions, decode, initial_noise
from .inputs import AUTOCAST_OFF, Workspace, advancing, by_id, progress_bar, real_latents
from .record import Batch, Generated, Record
from .registry import register_method


@torch.no_grad()
def invert_latents(
    parts,
    latents: torch.Tensor,
    prompts: list[str],
    steps: int,
    guidance: float,
    progress: Callable | None = None,
) -> torch.Tensor:
    """DDIM inversion of clean latents to the start of a `steps`-step trajectory (`progress` wraps the
    steps, as in `ddim_invert`)."""
    cond, uncond = conditions(parts, prompts)
    schedule = Schedule.from_scheduler(parts.scheduler, steps)
    return ddim_invert(cfg_model_fn(parts.unet, cond, uncond, guidance), latents, schedule, progress=progress)


def inversion_pool(ws: Workspace, latents: dict[str, torch.Tensor], steps: int, guidance: float) -> dict:
    """DDIM inversions of every real image's latent under its class's prompt, by id (cached; the key
    covers the model and concept folder, the ids, the prompts and the inversion settings)."""
    ids, model = list(latents), ws.model
    label_of = {sid: c for c, members in enumerate(ws.ctx.source_ids) for sid in members}
    prompts = [ws.ctx.class_prompts[label_of[sid]] for sid in ids]
    settings = [steps, guidance]

    def build():
        stacked, device = torch.stack([latents[s] for s in ids]), model.device()
        dtype = model.parts.unet.dtype

        def invert(rows: torch.Tensor, progress: Callable | None = None) -> torch.Tensor:
            chunk, chunk_prompts = stacked[rows.cpu()].to(device, dtype), [prompts[i] for i in rows.tolist()]
            return invert_latents(model.parts, chunk, chunk_prompts, *settings, progress=progress).float()

        chunks = torch.arange(len(ids)).split(ws.batch_size)
        desc = f"DDIM inversion of {len(ids)} real images"
        # counted in DDIM steps, not images: the default pool (50 images) is a single chunk
        with model.precision(device), progress_bar(len(chunks) * steps, desc, "step") as bar:
            inverted = torch.cat([invert(rows, lambda s: advancing(bar, s)) for rows in chunks])

        def without_autocast(rows: torch.Tensor) -> torch.Tensor:
            with torch.autocast(device.type, enabled=False):
                return invert(rows)

        return {
            "inversions": recompute_non_finite(inverted, without_autocast, ids, "Inversions", AUTOCAST_OFF)
        }

    row = tuple(latents[ids[0]].shape) if ids else ()  # an inversion has its latent's shape
    expect = {"inversions": (len(ids), *row)}
    depends_on = {"model": model.fingerprint(), "ids": ids, "prompts": prompts, "settings": settings}
    cached = ws.cached("inversions", build, expect, **depends_on)
    return by_id(ids, cached["inversions"])


def check_split_ratio(split_ratio: float) -> None:
    if not 0.0 <= split_ratio <= 1.0:
        raise ValueError(f"split_ratio must lie in [0, 1], got {split_ratio}")


def suffix_step_count(split_ratio: float, timesteps: torch.Tensor, num_train_timesteps: int) -> int:
    """Number of leading (noisiest) steps that use the suffixed prompt: those with t >= T·(1 − s), the
    official code's criterion (7 of 25 DDIM steps at s = 0.3 with T = 1000)."""
    check_split_ratio(split_ratio)
    return int((timesteps >= num_train_timesteps * (1 - split_ratio)).sum())


# Inversions closer than this to (anti)parallel (radians) count as one direction: the slerp weights
# divide by sin α, and λ ~ U[0, 2π/α] would walk millions of turns around a circle that is not there.
DEGENERATE_ANGLE = 1e-3

# Named parts of the great circle through I_a (λ = 0) and I_b (λ = −1), for `lambda_range`.
LAMBDA_RANGES = ("full", "interpolation", "extrapolation")


def check_lambda_range(span) -> str | list[float]:
    """`span` as DiffII uses it: a name of LAMBDA_RANGES, or [lo, hi] fractions of the circle."""
    if isinstance(span, str):
        if span in LAMBDA_RANGES:
            return span
    elif isinstance(span, list | tuple) and len(span) == 2:
        lo, hi = (float(v) for v in span)
        if math.isfinite(lo) and math.isfinite(hi) and lo <= hi:
            return [lo, hi]
    raise ValueError(
        f"lambda_range must be one of {LAMBDA_RANGES} or [lo, hi], fractions of the circle with lo <= hi "
        f"(Diff-II's full cycle: [0, 1]), got {span!r}"
    )


def lambda_in_range(span: str | list[float], fraction: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """λ per pair from its planned uniform fraction u ∈ [0, 1) and the pair's angle α: u spread over
    `span`. "full" is Diff-II's λ ~ U[0, 2π/α]: a whole turn from I_a, of which the share α/2π lies
    between the two inversions; "interpolation" that arc, λ ~ U(−1, 0]; "extrapolation" the rest of the
    turn, λ ~ U[0, 2π/α − 1); [lo, hi] the fractions lo to hi of the whole turn."""
    if span == "full":
        return lambda_from_fraction(fraction, alpha)
    if span == "interpolation":
        return -fraction.double()
    if span == "extrapolation":
        return fraction.double() * (2 * math.pi / alpha.double() - 1)
    lo, hi = span
    return lambda_from_fraction(lo + fraction.double() * (hi - lo), alpha)


def suffix_words(suffix: str) -> list[str]:
    """The words of a suffix, lower-cased, without punctuation (", dark, patterned" -> dark, patterned)."""
    return re.findall(r"[\w-]+", suffix.lower())


@register_method("diffii")
@dataclass
class DiffII(ExpansionMethod):
    """Diff-II: spherical inter/extrapolation of two same-class DDIM inversions, denoised in two stages.

    Args:
        num_inference_steps: DDIM steps of the denoising.
        guidance_scale: classifier-free guidance scale of the denoising.
        inversion_steps: DDIM inversion steps (paper: 25; official code: 200).
        inversion_guidance: guidance scale of the inversion.
        split_ratio: s: the steps with t >= T·(1 − s) use "prompt + suffix", the rest the plain prompt
            (paper: 0.3 for 5-shot, 0.1 for 10-shot, 1.0 for long-tail).
        suffixes: suffixes to draw from (a list).
        suffix_file: a file of suffixes, one per line.
        suffix_preset: a built-in suffix list (diffexpand.suffixes).
        suffix_captioner: generate suffixes from the real images with this captioner (with `suffix_llm`).
        suffix_llm: the language model that turns captions into suffixes: a local transformers model,
            or "openai:<model>" (URL and key from the environment).
        num_suffixes: how many suffixes to generate.
        suffix_exclude: per metaclass, words its suffixes may not contain ({"shoe": ["dark"]}: shoes never
            draw a suffix with the word "dark"): for attribute words that carry one fine class across to
            another on a given prior. Every key must be a metaclass of the data, and every metaclass must
            keep a suffix.
        negative_prompt: the unconditional prompt of classifier-free guidance.
        lambda_range: where on the circle through the two inversions λ is drawn: "full" (the paper's
            λ ~ U[0, 2π/α], the whole turn: three quarters extrapolation when α ≈ π/2),
            "interpolation" (the arc between them), "extrapolation" (the rest of the turn), or
            [lo, hi]: fractions of the whole turn.
    """

    num_inference_steps: int = 25
    guidance_scale: float = 7.5
    inversion_steps: int = 25
    inversion_guidance: float = 1.0
    split_ratio: float = 0.3
    suffixes: list[str] = field(default_factory=list)
    suffix_file: str | None = None
    suffix_preset: str | None = None
    suffix_captioner: str | None = None
    suffix_llm: str | None = None
    num_suffixes: int = 10
    suffix_exclude: dict[str, list[str]] = field(default_factory=dict)
    negative_prompt: str = ""
    lambda_range: list[float] | str = "full"

    uses_concepts = True

    def __post_init__(self):
        check_split_ratio(self.split_ratio)
        self.lambda_range = check_lambda_range(self.lambda_range)
        if bool(self.suffix_captioner) != bool(self.suffix_llm):
            raise ValueError("generated suffixes need both suffix_captioner and suffix_llm")
        static = resolve_suffixes(self.suffixes, self.suffix_file, self.suffix_preset)
        if self.suffix_captioner and static:
            raise ValueError("give one suffix source: generated (suffix_captioner) or a list/file/preset")
        self.suffixes = static
        if self.suffix_exclude and not (self.suffixes or self.suffix_captioner):
            raise ValueError(
                "suffix_exclude needs suffixes to exclude from (suffixes, a file, a preset or generated)"
            )
        self._pools: dict[tuple[str, ...], dict[str, list[str]]] = {}  # per dataset: metaclass -> suffixes
        self._warned_single = False
        self._warned_pairs: set[tuple[str, ...]] = set()

    def setup(self, ws: Workspace) -> None:
        """Generated suffixes (captioner + LLM over the real images, cached) before planning."""
        if not self.suffix_captioner:
            return
        from diffexpand.suffixes.generate import generate_suffixes

        real = ws.require_real(self.name)
        settings = [self.suffix_captioner, self.suffix_llm, self.num_suffixes]
        metaclasses, device = ws.ctx.metaclasses, str(ws.model.device())

        def build():
            return generate_suffixes(real.pil_images(), metaclasses, *settings, device=device)

        depends_on = {"data": real.source[:2], "ids": real.ids, "settings": settings}
        self.suffixes = list(ws.cached_json("suffixes", build, strings(self.num_suffixes), **depends_on))

    def prepare(self, ws: Workspace) -> dict:
        latents = real_latents(ws, self.name)
        return {"inversions": inversion_pool(ws, latents, self.inversion_steps, self.inversion_guidance)}

    def inputs_for(self, record: Record, prepared: dict) -> dict[str, torch.Tensor]:
        inversions = [prepared["inversions"][s] for s in record["source_ids"]]
        return dict(zip(("inversion_a", "inversion_b"), inversions, strict=False))

    def suffix_pool(self, ctx, metaclass: str) -> list[str]:
        """The suffixes one metaclass draws from: all of them, less those `suffix_exclude` bars for it."""
        if not self.suffix_exclude:
            return self.suffixes
        key = tuple(ctx.metaclasses)
        if key not in self._pools:
            unknown = sorted(set(self.suffix_exclude) - set(key))
            if unknown:
                known = ", ".join(sorted(set(key)))
                raise ValueError(
                    f"suffix_exclude names metaclasses the data does not have: {unknown} (it has: {known})"
                )
            pools = {}
            for name in dict.fromkeys(key):
                barred = {word.lower() for word in self.suffix_exclude.get(name, [])}
                pools[name] = [x for x in self.suffixes if not barred & set(suffix_words(x))]
                if not pools[name]:
                    raise ValueError(f"suffix_exclude {sorted(barred)} leaves metaclass {name!r} no suffix")
            self._pools[key] = pools
        return self._pools[key][metaclass]

    def plan(self, ctx, label, rng, index=0) -> dict:
        members = class_members(ctx, label)
        if len(members) >= 2:
            a, b = rng.choice(len(members), size=2, replace=False)
            pair, sources = "inversions", [members[int(a)], members[int(b)]]
        else:
            if not self._warned_single:
                warnings.warn(
                    f"class {ctx.class_names[label]!r} has a single real image: Diff-II pairs its "
                    "inversion with a seeded Gaussian latent instead of a second one "
                    "(recorded as pair='gaussian')",
                    stacklevel=2,
                )
                self._warned_single = True
            pair, sources = "gaussian", [members[0]]
        pool = self.suffix_pool(ctx, ctx.metaclasses[label])
        suffix = pool[int(rng.integers(len(pool)))] if pool else ""
        prompt = ctx.class_prompts[label]
        return {
            "source_ids": sources,
            "pair": pair,
            "lambda_fraction": float(rng.random()),  # λ from it and α (lambda_in_range), once inverted
            "suffix": suffix,
            "prompt": prompt,
            "prompt_with_suffix": append_suffix(prompt, suffix),
            "split_ratio": self.split_ratio,
        }

    def partner_latents(self, parts, batch: Batch, inv_a: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
        """I_b per record and the pair actually used: the second inversion, or a Gaussian latent scaled
        to |I_a| (a single image, or two images whose inversions have no great circle between them)."""
        noise = initial_noise(parts, batch.records, "partner", inv_a.shape[1:])
        noise = noise * (inv_a.flatten(1).norm(dim=1) / noise.flatten(1).norm(dim=1)).reshape(-1, 1, 1, 1)
        pairs = batch.values("pair")
        inv_b = torch.stack(
            [
                inputs["inversion_b"].to(inv_a) if pair == "inversions" else noise[i]
                for i, (inputs, pair) in enumerate(zip(batch.inputs, pairs, strict=True))
            ]
        )
        off_axis = (angle_between(inv_a, inv_b) - math.pi / 2).abs()
        degenerate = (off_axis > math.pi / 2 - DEGENERATE_ANGLE).tolist()
        for i, record in enumerate(batch.records):
            if degenerate[i] and pairs[i] == "inversions":
                self._warn_degenerate(record)
                pairs[i] = "gaussian"
                inv_b[i] = noise[i]
        return inv_b, pairs

    def _warn_degenerate(self, record: Record) -> None:
        pair = tuple(record["source_ids"])
        if pair not in self._warned_pairs:
            self._warned_pairs.add(pair)
            warnings.warn(
                f"real images {pair[0]!r} and {pair[1]!r} of class {record.class_name!r} "
                "have (anti)parallel inversions (duplicate images?): their records pair the inversion with "
                "a seeded Gaussian latent instead (recorded as pair='gaussian')",
                stacklevel=3,
            )

    def slerp_start(self, parts, batch: Batch) -> tuple[torch.Tensor, list[dict]]:
        """Z per record on the great circle through its two inversions, at its λ, with (α, λ) and the
        pair when it fell back to a Gaussian partner."""
        inv_a = batch.stack("inversion_a").to(parts.unet.device, parts.unet.dtype)
        inv_b, pairs = self.partner_latents(parts, batch, inv_a)
        alpha = angle_between(inv_a, inv_b)
        fractions = torch.tensor(batch.values("lambda_fraction"), dtype=torch.float64)
        lam = lambda_in_range(self.lambda_range, fractions, alpha.cpu())
        z = spherical_inter_extrapolate(inv_a, inv_b, lam.to(inv_a.device))
        planned = batch.values("pair")
        extras = [
            {"alpha": a, "lambda": w} | ({"pair": p} if p != was else {})
            for a, w, p, was in zip(alpha.tolist(), lam.tolist(), pairs, planned, strict=True)
        ]
        return z, extras

    def two_stage_model_fn(self, parts, batch: Batch, schedule: Schedule):
        """The CFG model function that conditions on "prompt + suffix" while t >= T·(1 − s), then on
        the plain prompt."""
        with_suffix, uncond = conditions(parts, batch.values("prompt_with_suffix"), self.negative_prompt)
        plain, _ = conditions(parts, batch.values("prompt"), self.negative_prompt)
        first_plain = suffix_step_count(
            self.split_ratio, schedule.timesteps, parts.scheduler.config.num_train_timesteps
        )
        return cfg_model_fn(
            parts.unet, lambda i: with_suffix if i < first_plain else plain, uncond, self.guidance_scale
        )

    def denoise(self, parts, model_fn, z: torch.Tensor, schedule: Schedule, batch: Batch):
        """The whole schedule from Z; the clean latents and what was measured per record (nothing)."""
        return ddim_sample(model_fn, z, schedule), [{} for _ in batch.records]

    @torch.no_grad()
    def generate(self, parts, batch: Batch) -> Generated:
        z, extras = self.slerp_start(parts, batch)
        schedule = Schedule.from_scheduler(parts.scheduler, self.num_inference_steps)
        model_fn = self.two_stage_model_fn(parts, batch, schedule)
        latents, measured = self.denoise(parts, model_fn, z, schedule, batch)
        extras = [e | m for e, m in zip(extras, measured, strict=True)]
        return Generated(decode(parts, latents), extras)
